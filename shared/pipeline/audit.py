"""The audit trail: who did what to which record, from where and why.

Two rows per act, one in the record's partition and one in the day's, so "everything about
CASE-12" and "everything on 24 November" are both partition scans.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..core.contracts import RecordRef
from ..store.stores import AUDIT, Stores
from .events import event_id


@dataclass(frozen=True)
class Actor:
    """Who asked: the Functions host's principal header, else the key's holder."""

    name: str
    source: str  # "api", "cli", "mailfiler"


def audit(
    stores: Stores, actor: Actor, action: str, record: RecordRef | None, detail: str, now: datetime
) -> None:
    stamp = f"{now:%Y%m%dT%H%M%S%f}-{event_id(actor.name, action, detail, now.isoformat())[:8]}"
    row = {
        "Actor": actor.name[:200],
        "Source": actor.source,
        "Action": action,
        "Detail": detail[:2000],
        "At": now,
        "RecordType": record.type if record else None,
        "RecordKey": record.key if record else None,
    }
    partitions = [f"day-{now:%Y%m%d}"]
    if record is not None:
        partitions.append(f"rec-{record.type}-{record.key}")
    for partition in partitions:
        stores.table(AUDIT).upsert({"PartitionKey": partition, "RowKey": stamp, **row})
