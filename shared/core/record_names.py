"""Records named as people name them in text written for people (reasons, trails).

A decision's reasons are written when the record's number may not exist yet (a reply mapped
before its parent is filed), so they name a record by type and key ("case bfa94b43..."). Where
they are shown, the number is known: `name_records` puts `CASE-12` in place of the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .contracts import RecordRef

# "<type> <key>": a record type's name and the 32 hex digits of a record key (decide.record_key).
_REFERENCE = re.compile(r"\b([A-Za-z][A-Za-z0-9_-]{0,62}) ([0-9a-f]{32})\b")


def name_records(text: str, display_id: Callable[[RecordRef], str | None]) -> str:
    """`text` with each "<type> <key>" whose record has a display id replaced by it."""

    def named(match: re.Match[str]) -> str:
        shown = display_id(RecordRef(type=match[1], key=match[2]))
        return shown if shown else match[0]

    return _REFERENCE.sub(named, text)
