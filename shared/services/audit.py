"""The audit trail: who did what to which record, from where and why.

Two rows per act (store/audit_trail.py): one in the day's partition of the `Audit` table
("everything on 24 November"), and one beside the record's timeline, in its `Timeline`
partition ("everything about CASE-12"). Sharing the timeline's partition lets the file stage
write a record's first entry and its creation in one transaction; the day's row of a creation
from mail is kept beside the record (table Records), inserted in the record's own transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.contracts import RecordRef
from ..store import audit_trail
from ..store.keys import record_partition as record_partition  # tasks.py's import of it
from ..store.stores import Stores


@dataclass(frozen=True)
class Actor:
    """Who asked: the Functions host's principal header, else the key's holder."""

    name: str
    source: str  # "api", "cli", "mailfiler"


def audit(
    stores: Stores, actor: Actor, action: str, record: RecordRef | None, detail: str, now: datetime
) -> None:
    day, on_record = audit_trail.audit_rows(actor.name, actor.source, action, record, detail, now)
    audit_trail.write(stores, day, on_record)


def record_trail(stores: Stores, record: RecordRef) -> Iterator[dict[str, Any]]:
    """The record's audit rows, oldest first (not the `~p-` participant rows after them)."""
    yield from audit_trail.record_trail(stores, record)


def day_trail(
    stores: Stores, day: datetime, record_types: Iterable[str] = ()
) -> Iterator[dict[str, Any]]:
    """The day's acts; creations of records from mail only for `record_types` (the configured
    ones: their rows are kept beside the records, per type)."""
    yield from audit_trail.day_trail(stores, day, record_types)
