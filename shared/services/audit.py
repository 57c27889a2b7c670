"""The audit trail: who did what to which record, from where and why.

Two rows per act: one in the day's partition of the `Audit` table ("everything on 24 November"),
and one beside the record's timeline, in its `Timeline` partition under RowKeys starting with
`~audit-` ("everything about CASE-12"). Sharing the timeline's partition lets the file stage
write a record's first entry and its creation in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.contracts import RecordRef
from ..store.keys import short_hash
from ..store.stores import AUDIT, TIMELINE, Stores

AUDIT_ROW = "~audit-"  # sorts after every timeline entry's RowKey (they start with digits)


@dataclass(frozen=True)
class Actor:
    """Who asked: the Functions host's principal header, else the key's holder."""

    name: str
    source: str  # "api", "cli", "mailfiler"


def record_partition(record: RecordRef) -> str:
    return f"{record.type}-{record.key}"


def audit_rows(
    actor: Actor,
    action: str,
    record: RecordRef | None,
    detail: str,
    at: datetime,
    *,
    once: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The day's row and the record's row of one act. With `once` (what makes the act unique,
    e.g. the message that created a record), writing it again changes nothing."""
    tail = short_hash(actor.name, action, once or detail, "" if once else at.isoformat())[:12]
    stamp = f"{at:%Y%m%dT%H%M%S%f}-{tail}"
    row = {
        "Actor": actor.name[:200],
        "Source": actor.source,
        "Action": action,
        "Detail": detail[:2000],
        "At": at,
        "RecordType": record.type if record else None,
        "RecordKey": record.key if record else None,
    }
    day = {"PartitionKey": f"day-{at:%Y%m%d}", "RowKey": stamp, **row}
    if record is None:
        return day, None
    return day, {"PartitionKey": record_partition(record), "RowKey": AUDIT_ROW + stamp, **row}


def audit(
    stores: Stores, actor: Actor, action: str, record: RecordRef | None, detail: str, now: datetime
) -> None:
    day, on_record = audit_rows(actor, action, record, detail, now)
    stores.table(AUDIT).upsert(day)
    if on_record is not None:
        stores.table(TIMELINE).upsert(on_record)


def record_trail(stores: Stores, record: RecordRef) -> Iterator[dict[str, Any]]:
    """The record's audit rows, oldest first (not the `~p-` participant rows after them)."""
    partition = record_partition(record)
    # "~audit." is the first key after every "~audit-..." one.
    yield from stores.table(TIMELINE).partition(partition, row_from=AUDIT_ROW, row_before="~audit.")


def day_trail(stores: Stores, day: datetime) -> Iterator[dict[str, Any]]:
    yield from stores.table(AUDIT).partition(f"day-{day:%Y%m%d}")
