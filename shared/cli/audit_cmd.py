"""`mailfiler audit`: the audit trail of a record, or of a day."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from ..core.contracts import RecordRef
from ..services.audit import day_trail, record_trail
from ..store.stores import Stores
from .records import show_record


def _view(row: dict[str, Any]) -> dict[str, Any]:
    at = row.get("At")
    return {
        "at": at.isoformat() if isinstance(at, datetime) else None,
        "actor": row.get("Actor"),
        "source": row.get("Source"),
        "action": row.get("Action"),
        "record_type": row.get("RecordType"),
        "record_key": row.get("RecordKey"),
        "detail": row.get("Detail"),
    }


def cmd_audit(stores: Stores, record: str | None, day: str | None, as_json: bool) -> int:
    if record:
        found = show_record(stores, record)
        if found is None:
            print(f"no record {record}", file=sys.stderr)
            return 1
        rows = list(record_trail(stores, RecordRef(type=found["type"], key=found["key"])))
    else:
        try:
            when = datetime.strptime(day or "", "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            print(f"--day wants YYYY-MM-DD, not {day!r}", file=sys.stderr)
            return 2
        rows = list(day_trail(stores, when))
    for row in map(_view, rows):
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(
                f"{row['at']}  {row['actor']} ({row['source']})  {row['action']}  {row['detail']}"
            )
    return 0
