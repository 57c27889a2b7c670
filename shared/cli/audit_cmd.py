"""`mailfiler audit`: the audit trail of a record, or of a day."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from ..core.config import Config
from ..core.contracts import RecordRef
from ..services.audit import day_trail, record_trail
from ..services.records import RecordError
from ..store.stores import Stores
from .records import find_record


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


def cmd_audit(
    stores: Stores, config: Config, record: str | None, day: str | None, as_json: bool
) -> int:
    if record:
        try:  # CASE-12, case-12 or 12, as `records show` takes them
            found = find_record(stores, config, record)
        except RecordError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        ref = RecordRef(type=found["PartitionKey"], key=found["RowKey"])
        rows = list(record_trail(stores, ref))
    else:
        try:
            when = datetime.strptime(day or "", "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            print(f"--day wants YYYY-MM-DD, not {day!r}", file=sys.stderr)
            return 2
        rows = list(day_trail(stores, when, [t.name for t in config.record_types]))
    for row in map(_view, rows):
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(
                f"{row['at']}  {row['actor']} ({row['source']})  {row['action']}  {row['detail']}"
            )
    return 0
