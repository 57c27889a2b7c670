"""The audit trail's rows: one in the day's partition of table Audit (keys.audit_day: "everything
on 24 November"), and one beside the record's timeline in its Timeline partition under
keys.AUDIT_ROWS ("everything about CASE-12"). The day's row of a record's creation from mail is
kept beside the record instead (table Records, under keys.RECORD_AUDIT_ROWS), inserted with it
in one transaction; the day's trail reads both places."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from ..core.contracts import RecordRef
from .keys import (
    AUDIT_ROWS,
    RECORD_AUDIT_ROWS,
    after_prefix,
    audit_day,
    audit_row,
    record_audit_day,
    record_partition,
)
from .stores import AUDIT, RECORDS, TIMELINE, Stores
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


def beside_record(day: Entity, record: RecordRef) -> Entity:
    """The day's row of `record`'s creation as kept beside the record (its type's partition of
    table Records), to be inserted in the record's own transaction."""
    return {**day, "PartitionKey": record.type, "RowKey": RECORD_AUDIT_ROWS + str(day["RowKey"])}


def write_beside_record(stores: Stores, day: Entity, record: RecordRef) -> None:
    """The creation's day row beside the record on its own (a redelivered creation: the
    record's transaction wrote it, unless an older build created the record)."""
    stores.table(RECORDS).upsert(beside_record(day, record))


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


def day_trail(stores: Stores, day: datetime, record_types: Iterable[str] = ()) -> list[Entity]:
    """The day's acts in time order: the Audit table's day partition, and the creations of
    records of `record_types` kept beside them (as the Audit table keeps them: same RowKey,
    partition the day's; a creation an older build wrote to both places shows once)."""
    rows = {str(r["RowKey"]): r for r in stores.table(AUDIT).partition(audit_day(day))}
    prefix = record_audit_day(day)
    for record_type in dict.fromkeys(record_types):
        for row in stores.table(RECORDS).partition(
            record_type, row_from=prefix, row_before=after_prefix(prefix)
        ):
            key = str(row["RowKey"]).removeprefix(RECORD_AUDIT_ROWS)
            rows.setdefault(key, {**row, "PartitionKey": audit_day(day), "RowKey": key})
    # The RowKey starts with the act's time (keys.audit_row).
    return [rows[k] for k in sorted(rows)]
