"""Subject normalisation: the subject a thread keeps whatever replies and forwards add to it.

Rules, applied from the start of the subject, repeatedly:

* reply/forward prefixes are dropped in many languages, case-insensitively, with an optional
  counter (``RE[2]:``, ``Re(3):``, ``Re^2:``) and an ASCII or full-width colon (``：``);
  a space before the colon is allowed (French ``Re :``) except for the one-letter Italian
  ``R:``/``I:``, which only count with the colon right after them;
* "external sender" banners such as ``[EXTERNAL]`` or ``[EXT]`` at the start are dropped;
* any other bracketed tag (``[CASE-12]``, ``[list-name]``) is kept, because record tokens
  live there; prefixes right after such leading tags are still dropped;
* whitespace is collapsed and the result stripped.

A prefix word must be followed by its colon: ``Rebate: x`` and ``Reply needed`` stay as they are.
"""

from __future__ import annotations

import re

# Longest first so "Antwort" wins over "Antw" and "Fwd" over "Fw".
_PREFIX_WORDS = sorted(
    {
        # English and generic
        "re",
        "fwd",
        "fw",
        # German, Dutch, Scandinavian, Finnish
        "aw",
        "wg",
        "antw",
        "antwort",
        "doorst",
        "wtr",
        "sv",
        "svar",
        "vs",
        # Italian, French, Spanish, Portuguese
        "rif",
        "tr",
        "rv",
        "enc",
        "res",
        # Polish, Turkish
        "odp",
        "pd",
        "ynt",
        "ilt",
        # Greek, Cyrillic
        "απ",
        "σχετ",
        "πρθ",
        "пр",
        "на",
        "ha",
        "отв",
        # Chinese, Japanese, Korean
        "回复",
        "回覆",
        "答复",
        "转发",
        "轉寄",
        "返信",
        "転送",
        "회신",
        "전달",
    },
    key=len,
    reverse=True,
)

_COLON = "[:：]"
_COUNTER = r"(?:\[\d+\]|\(\d+\)|\^\d+)"
_PREFIX = re.compile(
    r"(?:(?:"
    + "|".join(map(re.escape, _PREFIX_WORDS))
    + r")\s*"
    + _COUNTER
    + r"?\s*"
    + _COLON
    # One-letter Italian prefixes: colon immediately, nothing else.
    + r"|[RI]"
    + _COLON
    + r")\s*",
    re.IGNORECASE,
)
_EXTERNAL_TAG = re.compile(
    r"[\[(](?:external|ext)(?:[ _-]?(?:email|e-mail|mail|sender|message))?[\])]\s*",
    re.IGNORECASE,
)
_TAG = re.compile(r"\[[^\[\]]*\]\s*")


def normalize_subject(subject: str) -> str:
    """The subject without reply/forward prefixes and external banners; see the module doc."""
    text = " ".join(subject.split())
    kept: list[str] = []
    pos = 0
    while pos < len(text):
        match = _PREFIX.match(text, pos) or _EXTERNAL_TAG.match(text, pos)
        if match is not None:
            pos = match.end()
            continue
        tag = _TAG.match(text, pos)
        if tag is None:
            break
        kept.append(tag.group().strip())
        pos = tag.end()
    return " ".join([*kept, text[pos:]]).strip()
