"""Table `Retention`: handled mail to delete from its mailbox later, one row per mail under the
day its deletion falls due (PK `keys.due_day`, RK the mail's sighting key), so a run reads
every partition up to today in one query."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError

from ..core.contracts import RecordRef
from .keys import due_day
from .tables import Entity, Table


def note(
    table: Table,
    due: datetime,
    row: str,
    *,
    mailbox: str,
    source_id: str,
    message_key: str,
    record: RecordRef | None,
    now: datetime,
) -> None:
    table.upsert(
        {
            "PartitionKey": due_day(due),
            "RowKey": row,
            "Mailbox": mailbox,
            "SourceId": source_id[:1000],
            "MessageKey": message_key[:400],
            "RecordType": record.type if record else None,
            "RecordKey": record.key if record else None,
            "HandledAt": now,
        }
    )


def due(table: Table, now: datetime) -> Iterator[Entity]:
    """The notes of every day up to today's."""
    return table.query("PartitionKey le @today", {"today": due_day(now)})


def record_of(row: Entity) -> RecordRef | None:
    """The record the noted mail was filed on, if any."""
    key = row.get("RecordKey")
    return RecordRef(type=row["RecordType"], key=key) if key else None


def forget(table: Table, row: Entity) -> None:
    """Drop a note (acted on, or no longer wanted); gone already is fine."""
    with contextlib.suppress(ResourceNotFoundError):
        table.delete(row["PartitionKey"], row["RowKey"])
