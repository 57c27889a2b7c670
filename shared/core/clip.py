"""Cutting text to a size without breaking what a reader sees.

A hostile mail can carry a subject, a name or a header of megabytes; what we keep of it must
fit a queue message (64 KiB) and a table property (64 KiB), while the raw mail keeps it whole.
A cut never splits a character (Python strings are code points, so UTF-8 and UTF-16 encodings of
the result are whole), and steps back over marks that belong to the character before the cut
(combining accents, joiners, variation selectors, skin tones), so the text does not end in half
an emoji or a letter without its accent. An ellipsis shows that something was cut.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "\u2026"
_ATTACHING = frozenset({"Mn", "Mc", "Me"})


def _attaches(ch: str) -> bool:
    """Whether `ch` belongs to the character before it (dropping one without the other is a
    half character on screen)."""
    point = ord(ch)
    return (
        unicodedata.category(ch) in _ATTACHING
        or ch == "\u200d"  # zero-width joiner
        or 0xFE00 <= point <= 0xFE0F  # variation selectors
        or 0xE0100 <= point <= 0xE01EF
        or 0x1F3FB <= point <= 0x1F3FF  # emoji skin tones
        or 0xE0020 <= point <= 0xE007F  # emoji tag sequences (flags of regions)
        or 0xDC00 <= point <= 0xDFFF  # a low surrogate (lone, from broken UTF-16)
    )


def clip(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, an ellipsis at the end when it was cut."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    cut = limit - len(ELLIPSIS)
    # Step back while the first character dropped belongs to the last one kept.
    while cut > 0 and _attaches(text[cut]):
        cut -= 1
    # ... and never end on a joiner or a high surrogate waiting for its partner.
    while cut > 0 and (text[cut - 1] == "\u200d" or 0xD800 <= ord(text[cut - 1]) <= 0xDBFF):
        cut -= 1
    return text[:cut] + ELLIPSIS
