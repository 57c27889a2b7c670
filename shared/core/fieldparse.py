"""`Key: Value` lines in a mail body that set record fields, checked against the record type.

The block is either between the configured marker lines, or (without markers) the run of
`Key: Value` lines at the very top of the new text, so quoted text and signatures never set
fields. Keys are matched to the record type's fields case-insensitively; values are coerced to
the field's type. Unknown keys, bad values and fields a reply may not change are reported, not
applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from .config import FieldBlock, FieldSpec, RecordType

_LINE = re.compile(r"^\s*(?P<key>[A-Za-z][A-Za-z0-9 _-]{0,60}?)\s*:\s*(?P<value>.*?)\s*$")
MAX_VALUE = 1000


@dataclass
class ParsedFields:
    values: dict[str, str | int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _block(text: str, block: FieldBlock) -> list[str]:
    lines = text.splitlines()
    if block.start:
        try:
            start = next(i for i, line in enumerate(lines) if line.strip() == block.start)
        except StopIteration:
            return []
        rest = lines[start + 1 :]
        if block.end:
            end = next((i for i, line in enumerate(rest) if line.strip() == block.end), len(rest))
            rest = rest[:end]
        return [line for line in rest if line.strip()]
    out: list[str] = []
    for line in lines:
        if not line.strip():
            if out:
                break
            continue
        if not _LINE.match(line):
            break
        out.append(line)
    return out


def _coerce(spec: FieldSpec, raw: str) -> str | int:
    if spec.type == "int":
        return int(raw.strip())
    if spec.type == "date":
        return date.fromisoformat(raw.strip()).isoformat()
    if spec.type == "choice":
        for choice in spec.choices:
            if choice.lower() == raw.strip().lower():
                return choice
        raise ValueError(f"not one of {', '.join(spec.choices)}")
    return raw[:MAX_VALUE]


def parse_fields(
    text: str, record_type: RecordType, block: FieldBlock, *, updating: bool
) -> ParsedFields:
    result = ParsedFields()
    if not record_type.fields:
        return result
    for line in _block(text, block):
        match = _LINE.match(line)
        if match is None:
            continue
        key, raw = match["key"].strip(), match["value"]
        spec = record_type.field(key)
        if spec is None:
            result.problems.append(f"field {key!r} is not a field of {record_type.name}")
            continue
        if updating and not spec.on_update:
            result.problems.append(f"field {spec.name} cannot be changed by a reply")
            continue
        try:
            result.values[spec.name] = _coerce(spec, raw)
        except ValueError as exc:
            result.problems.append(
                f"field {spec.name}: {raw[:40]!r} is not a valid {spec.type} ({str(exc)[:60]})"
            )
    return result
