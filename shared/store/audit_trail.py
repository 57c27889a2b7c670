"""The audit trail's rows: one in the day's partition of table Audit (keys.audit_day: "everything
on 24 November"), and one beside the record's timeline in its Timeline partition under
keys.AUDIT_ROWS ("everything about CASE-12")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from ..core.contracts import RecordRef
from .keys import AUDIT_ROWS, after_prefix, audit_day, audit_row, record_partition
from .stores import AUDIT, TIMELINE, Stores
from .tables import Entity


def audit_rows(
    actor: str,
    source: str,
    action: str,
    record: RecordRef | None,
    detail: str,
    at: datetime,
    *,
    once: str | None = None,
) -> tuple[Entity, Entity | None]:
    """The day's row and the record's row of one act. With `once` (what makes the act unique,
    e.g. the message that created a record), writing it again changes nothing."""
    stamp = audit_row(actor, action, detail, at, once)
    row = {
        "Actor": actor[:200],
        "Source": source,
        "Action": action,
        "Detail": detail[:2000],
        "At": at,
        "RecordType": record.type if record else None,
        "RecordKey": record.key if record else None,
    }
    day = {"PartitionKey": audit_day(at), "RowKey": stamp, **row}
    if record is None:
        return day, None
    return day, {"PartitionKey": record_partition(record), "RowKey": AUDIT_ROWS + stamp, **row}


def write_day(stores: Stores, day: Entity) -> None:
    stores.table(AUDIT).upsert(day)


def write(stores: Stores, day: Entity, on_record: Entity | None) -> None:
    write_day(stores, day)
    if on_record is not None:
        stores.table(TIMELINE).upsert(on_record)


def record_trail(stores: Stores, record: RecordRef) -> Iterator[Entity]:
    """The record's audit rows, oldest first (not the participant rows after them)."""
    partition = record_partition(record)
    yield from stores.table(TIMELINE).partition(
        partition, row_from=AUDIT_ROWS, row_before=after_prefix(AUDIT_ROWS)
    )


def day_trail(stores: Stores, day: datetime) -> Iterator[Entity]:
    yield from stores.table(AUDIT).partition(audit_day(day))
