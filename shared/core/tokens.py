"""Record tokens in subjects: `[CASE-1042]`, found again after mail clients rewrite the subject.

Outlook and others prepend prefixes and tags (`RE: [EXTERNAL] ...`), translate brackets to
full-width forms, swap the hyphen for a non-breaking or en dash, change case, or drop the
brackets. The finder folds all of that (NFKC, dashes, case) before matching. A bare `CASE-1042`
without brackets still counts, but needs the hyphen (or `#`), so prose like "case 12" does not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"), "-")


@dataclass(frozen=True, slots=True)
class Token:
    prefix: str  # upper-case, as configured
    number: int
    bracketed: bool

    def __str__(self) -> str:
        return f"[{self.prefix}-{self.number}]"


def format_token(prefix: str, number: int) -> str:
    return f"[{prefix}-{number}]"


@lru_cache(maxsize=64)
def _ascii_lower(wanted: tuple[str, ...]) -> tuple[str, ...] | None:
    """The prefixes lower-cased when all are ASCII, else None."""
    return tuple(p.lower() for p in wanted) if all(p.isascii() for p in wanted) else None


def _fold(subject: str) -> str:
    return unicodedata.normalize("NFKC", subject).translate(_DASHES)


@lru_cache(maxsize=64)
def _pattern(wanted: tuple[str, ...]) -> re.Pattern[str]:
    """The finder for these prefixes (longest first), built once: a decision looks twice."""
    names = "|".join(map(re.escape, wanted))
    return re.compile(
        rf"(?P<open>[\[(])\s*(?P<p>{names})\s*[-#: ]?\s*(?P<n>\d{{1,12}})\s*[\])]"
        rf"|(?<![\w-])(?P<bp>{names})\s?[-#](?P<bn>\d{{1,12}})(?![\w-])",
        re.IGNORECASE,
    )


def find_tokens(subject: str, prefixes: Iterable[str]) -> tuple[Token, ...]:
    """Every token of the given prefixes in `subject`, in order of appearance, without repeats."""
    wanted = _wanted(tuple(prefixes))
    if not wanted or not subject:
        return ()
    return _tokens_in(subject, wanted)


@lru_cache(maxsize=64)
def _wanted(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """The prefixes upper-cased, longest first (the pattern tries them in order)."""
    return tuple(sorted({p.upper() for p in prefixes}, key=lambda p: (-len(p), p)))


@lru_cache(maxsize=256)
def _tokens_in(subject: str, wanted: tuple[str, ...]) -> tuple[Token, ...]:
    """Cached: one decision looks a subject up twice (its lookups, then the record finder)."""
    lowered_prefixes = _ascii_lower(wanted) if subject.isascii() else None
    if lowered_prefixes is not None:
        # NFKC and the dash table change no ASCII text, and in ASCII a prefix matches
        # case-insensitively exactly where its lower case is in the lower-cased subject: most
        # subjects name no prefix at all.
        lowered = subject.lower()
        if not any(prefix in lowered for prefix in lowered_prefixes):
            return ()
        folded = subject
    else:
        folded = _fold(subject)
    found: dict[tuple[str, int], Token] = {}
    for match in _pattern(wanted).finditer(folded):
        if match.group("p"):
            token = Token(match.group("p").upper(), int(match.group("n")), True)
        else:
            token = Token(match.group("bp").upper(), int(match.group("bn")), False)
        found.setdefault((token.prefix, token.number), token)
    return tuple(found.values())
