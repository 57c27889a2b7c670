"""What operators and the poll stage know of each mailbox, outside its source's own state:

- table `Mailboxes`, PK `status`, RK the mailbox's name: how its polls went (`LastPoll`,
  `LastSuccess`, `ConsecutiveFailures`, `LastError`...), whether it was disabled after failures,
  when its server last asked for quiet;
- table `GraphState`, PK the mailbox's name, RK `resync`: a Graph mailbox's next poll runs
  delta whatever its schedule (`Requested`), and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .tables import Entity, Table

STATUS = "status"  # PK of the status rows in table Mailboxes
RESYNC = "resync"  # RK of a mailbox's resync request in table GraphState


def all_status(table: Table) -> dict[str, Entity]:
    """Every mailbox's status row, by name (one partition read)."""
    return {e["RowKey"]: e for e in table.partition(STATUS)}


def status(table: Table, name: str) -> Entity | None:
    return table.get(STATUS, name)


def put_status(table: Table, name: str, **fields: Any) -> None:
    """Merge `fields` into the mailbox's status row."""
    table.upsert({"PartitionKey": STATUS, "RowKey": name, **fields})


def note_busy(table: Table, name: str, now: datetime) -> None:
    """The mailbox's server asked for quiet (the poll stage re-queues it for later)."""
    put_status(table, name, LastBusyAt=now)


def enable(table: Table, name: str) -> None:
    """Poll a mailbox that was disabled after failures again."""
    put_status(table, name, Disabled=False, DisabledReason="", ConsecutiveFailures=0)


def request_resync(table: Table, mailbox: str, now: datetime, reason: str) -> None:
    table.upsert(
        {"PartitionKey": mailbox, "RowKey": RESYNC, "Requested": True, "Reason": reason, "At": now}
    )


def resync_done(table: Table, mailbox: str) -> None:
    table.upsert({"PartitionKey": mailbox, "RowKey": RESYNC, "Requested": False})


def resync_requested(table: Table, mailbox: str) -> bool:
    row = table.get(mailbox, RESYNC)
    return bool(row and row.get("Requested"))
