"""Reply-text benchmark: our `reply_text` against bare mail-parser-reply, side by side.

Run with ``python -m bench.bench_reply``. Corpora: ``replies/talon`` (the new text is ``Hello``
unless ``<name>_reply_text`` gives it; ours is scored without the two signatures talon keeps,
the library against talon's text as is) and ``replies/crisp`` (against
``tests/data/reply_expected``, whitespace at line ends and blank-line runs normalised).
Override the corpora root with ``MAILFILER_CORPORA`` and rounds with ``MAILFILER_BENCH_ROUNDS``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from mailparser_reply import EmailReplyParser

from shared.core.mime import parse_message
from shared.core.reply_text import LIBRARY_LANGUAGES, reply_text

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPORA = REPO.parent / "shared" / "corpora"
EXPECTED = REPO / "tests" / "data" / "reply_expected"
TALON_SIGNATURE_KEPT = {
    "iphone": "Sent from my iPhone",
    "sparrow": "--\nxxx\nSent with Sparrow (http://www.sparrowmailapp.com/?sig)",
}

# (body, expected for ours, expected for the library)
Case = tuple[str, str, str]


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


def talon(root: Path) -> list[Case]:
    cases = []
    for path in sorted((root / "replies" / "talon").glob("*.eml")):
        body = parse_message(path.read_bytes(), mailbox="bench", source_id=path.name).text
        given = path.with_name(f"{path.stem}_reply_text")
        upstream = exact(given.read_text(encoding="utf-8") if given.exists() else "Hello")
        ours = exact(upstream.removesuffix(TALON_SIGNATURE_KEPT.get(path.stem, "")))
        cases.append((body, ours, upstream))
    return cases


def crisp(root: Path) -> list[Case]:
    cases = []
    for path in sorted((root / "replies" / "crisp").glob("*.txt")):
        expected = (EXPECTED / f"{path.stem}.txt").read_text(encoding="utf-8")
        cases.append((path.read_text(encoding="utf-8"), expected, expected))
    return cases


def score(
    extract: Callable[[str], str], cases: list[Case], norm: Callable[[str], str], mine: bool
) -> int:
    return sum(norm(extract(body)) == norm(ours if mine else lib) for body, ours, lib in cases)


def per_message_us(extract: Callable[[str], str], cases: list[Case], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for body, _, _ in cases:
            extract(body)
    return (time.perf_counter() - start) / (rounds * max(len(cases), 1)) * 1e6


def main() -> None:
    root = Path(os.environ.get("MAILFILER_CORPORA", DEFAULT_CORPORA))
    rounds = int(os.environ.get("MAILFILER_BENCH_ROUNDS", "5"))
    print(f"reply text: corpora {root}, {rounds} rounds")
    print(f"{'corpus':<8} {'':>10} {'ours':>10} {'mail-parser-reply':>18}")
    for name, cases, norm in (("talon", talon(root), exact), ("crisp", crisp(root), squeeze)):
        if not cases:
            print(f"{name:<8} (missing)")
            continue
        n = len(cases)
        ours = score(reply_text, cases, norm, mine=True)
        theirs = score(library, cases, norm, mine=False)
        print(f"{name:<8} {'exact':>10} {f'{ours}/{n}':>10} {f'{theirs}/{n}':>18}")
        t_ours = per_message_us(reply_text, cases, rounds)
        t_lib = per_message_us(library, cases, rounds)
        print(f"{'':<8} {'µs/msg':>10} {t_ours:>10.0f} {t_lib:>18.0f}")


if __name__ == "__main__":
    main()
