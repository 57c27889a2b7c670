"""Big mail parsed without its big bodies: base64 runs stand aside while the stdlib parses.

The stdlib parser keeps every line of a part as a string until the part ends, then joins them:
a 100 MB attachment costs it 2.8 times its size on top of the raw bytes (measured). Big mail is
big because of base64 bodies, and a run of base64 lines can never hold a header or a boundary
(a boundary line starts with "--", a header has a colon; neither is in the base64 alphabet). So
for big mail each long run of base64 lines is replaced, before parsing, by one token line that
names it; the structure the parser finds is the same, and whoever reads a body puts the run's
raw bytes back (`expand`, `pieces`), a slice at a time where it can.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

HOLLOW_MIN_BYTES = 4 * 1024 * 1024  # smaller mail is parsed as it is
RUN_MIN_BYTES = 64 * 1024
SLICE_BYTES = 1024 * 1024
# Whole lines of base64 (RFC 2045 allows 76 characters; some senders write up to 998).
_RUN = re.compile(rb"^(?:[A-Za-z0-9+/=]{16,998}+\r?\n)++", re.MULTILINE)


@dataclass
class Hollow:
    """`data` is `raw` with its long base64 runs replaced by token lines; `runs` are their
    (start, end) in `raw`, the token of run i is NUL + marker + i + NUL."""

    raw: bytes
    data: bytes
    marker: str = ""
    runs: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The line end after a token may be gone: the parser gives the line end before a
        # boundary to the boundary, and then the run goes back without its own.
        self._token = re.compile("\x00" + re.escape(self.marker) + r"(\d+)\x00(\r?\n)?")
        self._token_bytes = re.compile(
            b"\x00" + re.escape(self.marker.encode()) + rb"(\d+)\x00(\r?\n)?"
        )

    def holds(self, text: str) -> bool:
        """Whether a part's body (as the parser keeps it) has runs standing aside."""
        return bool(self.runs) and "\x00" in text and self._token.search(text) is not None

    def pieces(self, text: str) -> Iterator[bytes]:
        """The body's true bytes, in slices of at most SLICE_BYTES."""
        pos = 0
        for match in self._token.finditer(text):
            yield from _slices(text[pos : match.start()].encode("ascii", "surrogateescape"))
            start, end = self._span(int(match.group(1)), bool(match.group(2)))
            view = memoryview(self.raw)
            for at in range(start, end, SLICE_BYTES):
                yield bytes(view[at : min(end, at + SLICE_BYTES)])
            pos = match.end()
        yield from _slices(text[pos:].encode("ascii", "surrogateescape"))

    def expand(self, data: bytes) -> bytes:
        """`data` (bytes rendered from the tree) with every run put back."""
        if not self.runs or b"\x00" not in data:
            return data

        def run(match: re.Match[bytes]) -> bytes:
            start, end = self._span(int(match.group(1)), bool(match.group(2)))
            return self.raw[start:end]

        return self._token_bytes.sub(run, data)

    def _span(self, index: int, line_end: bool) -> tuple[int, int]:
        """Where run `index` is in `raw`, with or without its last line end."""
        start, end = self.runs[index]
        if not line_end:
            end -= 2 if self.raw[end - 2 : end] == b"\r\n" else 1
        return start, end


def _slices(data: bytes) -> Iterator[bytes]:
    for at in range(0, len(data), SLICE_BYTES):
        yield data[at : at + SLICE_BYTES]


def hollow(raw: bytes) -> Hollow:
    """`raw` ready to parse: unchanged when small or without long base64 runs."""
    if len(raw) < HOLLOW_MIN_BYTES:
        return Hollow(raw, raw)
    number = 0
    while f"mailfiler-run{number}".encode() in raw:  # a marker the mail itself never holds
        number += 1
    marker = f"mailfiler-run{number}-"
    parts: list[bytes] = []
    runs: list[tuple[int, int]] = []
    pos = 0
    for match in _RUN.finditer(raw):
        if match.end() - match.start() < RUN_MIN_BYTES:
            continue
        newline = b"\r\n" if raw[match.end() - 2 : match.end()] == b"\r\n" else b"\n"
        parts.append(raw[pos : match.start()])
        parts.append(b"\x00" + f"{marker}{len(runs)}".encode() + b"\x00" + newline)
        runs.append((match.start(), match.end()))
        pos = match.end()
    if not runs:
        return Hollow(raw, raw)
    parts.append(raw[pos:])
    return Hollow(raw, b"".join(parts), marker, runs)
