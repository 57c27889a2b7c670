"""Reply-text benchmark: our `reply_text` against bare mail-parser-reply, side by side.

Run with ``python -m bench.bench_reply``. Every corpus lives in the repo (``tests/data``):

* ``corpora/replies/talon``: the new text is ``Hello`` unless ``<name>_reply_text`` gives it;
  ours is scored without the two signatures talon keeps, the library against talon's text as is.
* ``corpora/replies/crisp``: against ``tests/data/reply_expected`` (written for this project),
  whitespace at line ends and blank-line runs normalised.
* ``replies/<suite>/expected.json`` (crisp, github, mail-parser-reply, talon): expectations from
  each upstream suite's own test assertions (see ``tests/data/replies/README.md``): an exact
  text, or texts the reply must contain and texts it must not.

Override the data root with ``MAILFILER_TEST_DATA`` and rounds with ``MAILFILER_BENCH_ROUNDS``.
A missing corpus is an error, never a silent skip.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailparser_reply import EmailReplyParser

from shared.core.mime import parse_message
from shared.core.reply_text import LIBRARY_LANGUAGES, reply_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "tests" / "data"
TALON_SIGNATURE_KEPT = {
    "iphone": "Sent from my iPhone",
    "sparrow": "--\nxxx\nSent with Sparrow (http://www.sparrowmailapp.com/?sig)",
}
#: The suites with expectations from upstream assertions, and where their fixture files are.
UPSTREAM_SUITES = {
    "crisp": Path("corpora") / "replies" / "crisp",
    "github": Path("replies") / "github",
    "mail-parser-reply": Path("replies") / "mail-parser-reply",
    # talon's `tests/text_quotations_test.py`: the bodies are inline in its tests, so in the JSON.
    "talon": Path("replies") / "talon",
}


@dataclass(frozen=True)
class Case:
    """One body and what each extractor must give for it."""

    name: str
    body: str
    ours: str | None  # the exact text expected from `reply_text`, if the suite gives one
    theirs: str | None  # the exact text expected from the library (upstream keeps signatures)
    contains: tuple[str, ...] = field(default=())
    excludes: tuple[str, ...] = field(default=())


class MissingCorpus(RuntimeError):
    """A corpus the project ships is not where it should be: a broken checkout."""


def squeeze(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines).strip())


def exact(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()


def library(text: str) -> str:
    try:
        out = EmailReplyParser(languages=list(LIBRARY_LANGUAGES)).parse_reply(text=text)
    except Exception:  # count a crash as a miss
        return ""
    return out if isinstance(out, str) else ""


def _folder(path: Path, pattern: str) -> list[Path]:
    files = sorted(path.glob(pattern))
    if not files:
        raise MissingCorpus(f"no {pattern} under {path}")
    return files


def talon(data: Path) -> list[Case]:
    cases = []
    for path in _folder(data / "corpora" / "replies" / "talon", "*.eml"):
        body = parse_message(path.read_bytes(), mailbox="bench", source_id=path.name).text
        given = path.with_name(f"{path.stem}_reply_text")
        upstream = exact(given.read_text(encoding="utf-8") if given.exists() else "Hello")
        ours = exact(upstream.removesuffix(TALON_SIGNATURE_KEPT.get(path.stem, "")))
        cases.append(Case(path.stem, body, ours, upstream))
    return cases


def crisp_written(data: Path) -> list[Case]:
    """Crisp against the expectations this project wrote (compared with `squeeze`)."""
    expected = data / "reply_expected"
    cases = []
    for path in _folder(data / "corpora" / "replies" / "crisp", "*.txt"):
        text = squeeze((expected / f"{path.stem}.txt").read_text(encoding="utf-8"))
        cases.append(Case(path.stem, path.read_text(encoding="utf-8"), text, text))
    return cases


def upstream(data: Path, suite: str) -> list[Case]:
    """A suite's fixtures with the expectations its own tests assert."""
    root = data / UPSTREAM_SUITES[suite]
    spec_path = data / "replies" / suite / "expected.json"
    if not spec_path.is_file():
        raise MissingCorpus(f"no {spec_path}")
    spec: dict[str, dict[str, object]] = json.loads(spec_path.read_text(encoding="utf-8"))
    cases = []
    for name, item in sorted(spec.items()):
        inline = item.get("body")
        path = root / name
        if not isinstance(inline, str) and not path.is_file():
            raise MissingCorpus(f"{suite}: no fixture {path}")
        body = inline if isinstance(inline, str) else path.read_text(encoding="utf-8")
        full = item.get("exact")
        kept = item.get("signature_kept")
        theirs = exact(full) if isinstance(full, str) else None
        ours = theirs
        if theirs is not None and isinstance(kept, str):
            # Like talon, the suite keeps a signature that `reply_text` strips by design.
            ours = exact(theirs.removesuffix(exact(kept)))
        contains = item.get("contains", [])
        excludes = item.get("excludes", [])
        assert isinstance(contains, list) and isinstance(excludes, list)
        cases.append(
            Case(
                path.stem,
                body,
                ours,
                theirs,
                tuple(str(c) for c in contains),
                tuple(str(e) for e in excludes),
            )
        )
    return cases


def passes(out: str, case: Case, mine: bool, norm: Callable[[str], str] = exact) -> bool:
    want = case.ours if mine else case.theirs
    if want is not None and norm(out) != norm(want):
        return False
    return all(c in out for c in case.contains) and not any(e in out for e in case.excludes)


def score(cases: list[Case], norm: Callable[[str], str] = exact) -> tuple[list[str], list[str]]:
    """The names each of ours and the library's get right."""
    ours = [c.name for c in cases if passes(reply_text(c.body), c, True, norm)]
    theirs = [c.name for c in cases if passes(library(c.body), c, False, norm)]
    return ours, theirs


def corpora(data: Path) -> list[tuple[str, list[Case], Callable[[str], str]]]:
    """Every reply corpus: (label, cases, comparison)."""
    out: list[tuple[str, list[Case], Callable[[str], str]]] = [
        ("talon", talon(data), exact),
        ("crisp (ours)", crisp_written(data), squeeze),
    ]
    out += [(f"{name} (upstream)", upstream(data, name), exact) for name in UPSTREAM_SUITES]
    return out


def per_message_us(extract: Callable[[str], str], cases: list[Case], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for case in cases:
            extract(case.body)
    return (time.perf_counter() - start) / (rounds * max(len(cases), 1)) * 1e6


def main() -> None:
    data = Path(os.environ.get("MAILFILER_TEST_DATA", DEFAULT_DATA))
    rounds = int(os.environ.get("MAILFILER_BENCH_ROUNDS", "5"))
    print(f"reply text: data {data}, {rounds} rounds")
    print(f"{'corpus':<30} {'':>8} {'ours':>8} {'mail-parser-reply':>18}")
    for label, cases, norm in corpora(data):
        n = len(cases)
        ours, theirs = score(cases, norm)
        print(f"{label:<30} {'exact':>8} {f'{len(ours)}/{n}':>8} {f'{len(theirs)}/{n}':>18}")
        t_ours = per_message_us(reply_text, cases, rounds)
        t_lib = per_message_us(library, cases, rounds)
        print(f"{'':<30} {'µs/msg':>8} {t_ours:>8.0f} {t_lib:>18.0f}")


if __name__ == "__main__":
    main()
