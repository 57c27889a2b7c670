"""`reply_text` on the real-world reply corpora, measured against bare mail-parser-reply.

* talon (`replies/talon/*.eml`, parsed with `parse_message`): the new text is `Hello` unless
  `<name>_reply_text` gives it. Talon strips the quote only and keeps the sender's signature
  in two of those files ("Sent from my iPhone", "-- / xxx / Sent with Sparrow"); `reply_text`
  strips signatures too, so there the expected text is the upstream one without its trailing
  signature (checked: upstream = ours + a signature).
* crisp (`replies/crisp/*.txt`): against `tests/data/reply_expected/<name>.txt`, written by
  reading each body. Compared after stripping line ends and collapsing blank-line runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mailparser_reply import EmailReplyParser

from shared.core.mime import parse_message
from shared.core.reply_text import LIBRARY_LANGUAGES, reply_text

CORPORA = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"
TALON = CORPORA / "replies" / "talon"
CRISP = CORPORA / "replies" / "crisp"
EXPECTED = Path(__file__).resolve().parents[1] / "data" / "reply_expected"

# The floor is what the implementation achieved when this test was written.
CRISP_FLOOR = 90
# Upstream talon expectations that keep a signature, and the signature they keep.
TALON_SIGNATURE_KEPT = {
    "iphone": "Sent from my iPhone",
    "sparrow": "--\nxxx\nSent with Sparrow (http://www.sparrowmailapp.com/?sig)",
}


def squeeze(text: str) -> str:
    """Trailing whitespace off each line and the ends; runs of blank lines to one."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines).strip())


def exact(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip()


def library(text: str) -> str:
    try:
        out = EmailReplyParser(languages=list(LIBRARY_LANGUAGES)).parse_reply(text=text)
    except Exception:
        return ""
    return out if isinstance(out, str) else ""


def talon_cases() -> list[tuple[str, str, str]]:
    """(name, body text, upstream expected new text) for every talon reply."""
    if not TALON.is_dir():
        return []
    cases = []
    for path in sorted(TALON.glob("*.eml")):
        body = parse_message(path.read_bytes(), mailbox="corpus", source_id=path.name).text
        given = TALON / f"{path.stem}_reply_text"
        upstream = given.read_text(encoding="utf-8") if given.exists() else "Hello"
        cases.append((path.stem, body, upstream))
    return cases


def crisp_cases() -> list[tuple[str, str, str]]:
    if not CRISP.is_dir():
        return []
    return [
        (
            path.stem,
            path.read_text(encoding="utf-8"),
            (EXPECTED / f"{path.stem}.txt").read_text(encoding="utf-8"),
        )
        for path in sorted(CRISP.glob("*.txt"))
    ]


TALON_CASES = talon_cases()
CRISP_CASES = crisp_cases()
needs_talon = pytest.mark.skipif(not TALON_CASES, reason=f"no talon corpus under {TALON}")
needs_crisp = pytest.mark.skipif(not CRISP_CASES, reason=f"no crisp corpus under {CRISP}")


def our_talon_expectation(name: str, upstream: str) -> str:
    expected = exact(upstream)
    signature = TALON_SIGNATURE_KEPT.get(name)
    if signature is None:
        return expected
    assert expected.endswith(signature), f"{name}: upstream no longer ends in its signature"
    return exact(expected.removesuffix(signature))


@needs_talon
@pytest.mark.parametrize("case", TALON_CASES, ids=[c[0] for c in TALON_CASES])
def test_talon_reply_is_exact(case: tuple[str, str, str]) -> None:
    name, body, upstream = case
    assert exact(reply_text(body)) == our_talon_expectation(name, upstream)


@needs_talon
def test_talon_every_file_matches(capsys: pytest.CaptureFixture[str]) -> None:
    total = len(TALON_CASES)
    ours = sum(exact(reply_text(b)) == our_talon_expectation(n, u) for n, b, u in TALON_CASES)
    # The bare library keeps signatures, so it is scored against the upstream text as is.
    theirs = sum(exact(library(b)) == exact(u) for _, b, u in TALON_CASES)
    with capsys.disabled():
        print(f"\ntalon: ours {ours}/{total}, mail-parser-reply {theirs}/{total}")
    assert ours == total


@needs_crisp
def test_every_crisp_fixture_has_an_expectation() -> None:
    names = {name for name, _, _ in CRISP_CASES}
    written = {path.stem for path in EXPECTED.glob("*.txt")}
    assert names == written
    assert all(squeeze(expected) for _, _, expected in CRISP_CASES)


@needs_crisp
def test_crisp_majority_and_beats_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    ours = [name for name, body, exp in CRISP_CASES if squeeze(reply_text(body)) == squeeze(exp)]
    theirs = [name for name, body, exp in CRISP_CASES if squeeze(library(body)) == squeeze(exp)]
    total = len(CRISP_CASES)
    with capsys.disabled():
        print(f"\ncrisp: ours {len(ours)}/{total}, mail-parser-reply {len(theirs)}/{total}")
    assert len(ours) >= CRISP_FLOOR
    assert len(ours) > total // 2
    assert len(ours) > len(theirs)
