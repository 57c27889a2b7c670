"""The after-filing mailbox actions of one mail in one mailbox: a durable row, the truth of
whether they are pending, done or failed.

Table `PendingActions`, one partition per mailbox (PartitionKey: the mailbox name):
- RK `a-<message key>`: the work row. `State` pending|done|failed, the mailbox `SourceId` the
  actions act on, `Actions` (JSON), the record, `Job` (the one queue message allowed to run it
  now), `NextAt` (when that message is due), `RunningUntil` (a worker's claim), `Attempts`,
  `LastError`; `DoneAt` or `FailedAt` and `Reason`. Kept once done: actions run once per
  message and mailbox, whatever sighting of the mail comes later.
- RK `open-<message key>`: beside a pending row (`Due`: when it should have run by), so the
  sweep and the status count read only the open work, never the whole history.
- RK `failed-<message key>`: beside a failed row (`Reason`), for the status count.
A row and its marker change in one transaction (same partition), and every change of a work row
is conditional on its ETag: two workers never both run one mail's actions.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Literal

from ..core.contracts import MailboxAction, RecordRef
from .keys import after_prefix
from .names import PENDING_ACTIONS
from .stores import Stores
from .tables import Entity, Table

WORK, OPEN, FAILED = "a-", "open-", "failed-"
PENDING, DONE, FAILED_STATE = "pending", "done", "failed"
NOT_RUNNING = datetime(2000, 1, 1, tzinfo=UTC)  # `RunningUntil` of a row no worker holds
COUNT_CAP = 1000  # status counts stop here (a number an operator acts on, not a census)

State = Literal["pending", "done", "failed"]


def _table(stores: Stores) -> Table:
    return stores.table(PENDING_ACTIONS)


def new_job() -> str:
    return uuid.uuid4().hex


def get(stores: Stores, mailbox: str, message_key: str) -> Entity | None:
    return _table(stores).get(mailbox, WORK + message_key)


def actions_of(row: Entity) -> list[MailboxAction]:
    return [MailboxAction.model_validate(a) for a in json.loads(str(row.get("Actions") or "[]"))]


def record_of(row: Entity) -> RecordRef | None:
    kind, key = row.get("RecordType"), row.get("RecordKey")
    return RecordRef(type=kind, key=key) if isinstance(kind, str) and isinstance(key, str) else None


def create(
    stores: Stores,
    *,
    mailbox: str,
    message_key: str,
    source_id: str,
    actions: Sequence[MailboxAction],
    record: RecordRef | None,
    job: str,
    due: datetime,
    now: datetime,
) -> bool:
    """Insert the pending row and its open marker; False when the row exists already (a
    redelivered filing, or another sighting of the mail in this mailbox)."""
    row: Entity = {
        "PartitionKey": mailbox,
        "RowKey": WORK + message_key,
        "State": PENDING,
        "MessageKey": message_key,
        "SourceId": source_id[:1000],
        "Actions": json.dumps([a.model_dump(exclude_none=True) for a in actions]),
        "RecordType": record.type if record else None,
        "RecordKey": record.key if record else None,
        "Job": job,
        "NextAt": due,
        "RunningUntil": NOT_RUNNING,
        "Attempts": 0,
        "CreatedAt": now,
    }
    marker = {"PartitionKey": mailbox, "RowKey": OPEN + message_key, "Due": due}
    return _table(stores).transact_rows([("insert", row, None), ("insert", marker, None)])


def claim(stores: Stores, row: Entity, *, until: datetime) -> Entity | None:
    """Take the row for one run (until `until`), counting the attempt; None when another
    worker changed it first. Returns the row as it now is (with its new ETag)."""
    change = {
        "PartitionKey": row["PartitionKey"],
        "RowKey": row["RowKey"],
        "RunningUntil": until,
        "Attempts": int(row.get("Attempts") or 0) + 1,
    }
    marker = {"PartitionKey": row["PartitionKey"], "RowKey": _marker(row, OPEN), "Due": until}
    if not _table(stores).transact_rows(
        [("update", change, str(row["_etag"])), ("update", marker, None)]
    ):
        return None
    return get(stores, str(row["PartitionKey"]), str(row["MessageKey"]))


def reschedule(
    stores: Stores, row: Entity, *, job: str, due: datetime, now: datetime, error: str | None
) -> bool:
    """Hand the row to a new queue message due at `due` (the old one, if any, is superseded);
    False when another worker changed the row first."""
    change: Entity = {
        "PartitionKey": row["PartitionKey"],
        "RowKey": row["RowKey"],
        "Job": job,
        "NextAt": due,
        "RunningUntil": NOT_RUNNING,
    }
    if error is not None:
        change.update(LastError=error[:2000], LastErrorAt=now)
    marker = {"PartitionKey": row["PartitionKey"], "RowKey": _marker(row, OPEN), "Due": due}
    return _table(stores).transact_rows(
        [("update", change, str(row["_etag"])), ("update", marker, None)]
    )


def note_error(stores: Stores, row: Entity, error: str, now: datetime) -> bool:
    """A failed run that the queue retries as it is: the claim ends, the error is kept."""
    change = {
        "PartitionKey": row["PartitionKey"],
        "RowKey": row["RowKey"],
        "RunningUntil": NOT_RUNNING,
        "LastError": error[:2000],
        "LastErrorAt": now,
    }
    return _table(stores).update_if_unchanged(change, str(row["_etag"]))


def mark_done(stores: Stores, row: Entity, detail: str, now: datetime) -> bool:
    change = {
        "PartitionKey": row["PartitionKey"],
        "RowKey": row["RowKey"],
        "State": DONE,
        "DoneAt": now,
        "RunningUntil": NOT_RUNNING,
        "Detail": detail[:2000],
    }
    marker = {"PartitionKey": row["PartitionKey"], "RowKey": _marker(row, OPEN)}
    return _table(stores).transact_rows(
        [("update", change, str(row["_etag"])), ("delete", marker, None)]
    )


def mark_failed(stores: Stores, row: Entity, reason: str, now: datetime) -> bool:
    """Pending -> failed (with the reason). A failed row is counted until an operator replays
    its poison message, which reopens it."""
    if row.get("State") != PENDING:
        return False
    change = {
        "PartitionKey": row["PartitionKey"],
        "RowKey": row["RowKey"],
        "State": FAILED_STATE,
        "FailedAt": now,
        "RunningUntil": NOT_RUNNING,
        "Reason": reason[:2000],
    }
    open_marker = {"PartitionKey": row["PartitionKey"], "RowKey": _marker(row, OPEN)}
    failed_marker = {
        "PartitionKey": row["PartitionKey"],
        "RowKey": _marker(row, FAILED),
        "Reason": reason[:2000],
        "FailedAt": now,
    }
    return _table(stores).transact_rows(
        [
            ("update", change, str(row["_etag"])),
            ("delete", open_marker, None),
            ("insert", failed_marker, None),
        ]
    )


def reopen(stores: Stores, row: Entity, *, due: datetime, now: datetime) -> bool:
    """Failed -> pending, its attempts counted afresh (an operator replayed the poison
    message after a fix)."""
    change = {
        "PartitionKey": row["PartitionKey"],
        "RowKey": row["RowKey"],
        "State": PENDING,
        "Attempts": 0,
        "NextAt": due,
        "RunningUntil": NOT_RUNNING,
        "ReopenedAt": now,
    }
    failed_marker = {"PartitionKey": row["PartitionKey"], "RowKey": _marker(row, FAILED)}
    open_marker = {"PartitionKey": row["PartitionKey"], "RowKey": _marker(row, OPEN), "Due": due}
    return _table(stores).transact_rows(
        [
            ("update", change, str(row["_etag"])),
            ("delete", failed_marker, None),
            ("insert", open_marker, None),
        ]
    )


def open_rows(stores: Stores, mailbox: str, due_before: datetime) -> Iterator[str]:
    """Message keys of `mailbox`'s pending actions that should have run before `due_before`."""
    for marker in _table(stores).partition(
        mailbox,
        ["RowKey", "Due"],
        row_from=OPEN,
        row_before=after_prefix(OPEN),
        where="Due lt @due",
        parameters={"due": due_before},
    ):
        yield str(marker["RowKey"]).removeprefix(OPEN)


def counts(stores: Stores, mailbox: str) -> dict[str, int]:
    """How many mails of `mailbox` wait for their actions and how many failed (each up to
    COUNT_CAP)."""
    out = {}
    for name, prefix in (("pending", OPEN), ("failed", FAILED)):
        rows = _table(stores).partition(
            mailbox, ["RowKey"], row_from=prefix, row_before=after_prefix(prefix)
        )
        out[name] = sum(1 for _ in islice(rows, COUNT_CAP))
    return out


def running(row: Entity, now: datetime) -> bool:
    until = row.get("RunningUntil")
    return isinstance(until, datetime) and until > now


def stale(row: Entity, now: datetime, grace: timedelta) -> bool:
    """A pending row whose queue message should have run it long ago (lost: a crash between
    the row and the send, or a message gone astray) and that no worker holds."""
    if row.get("State") != PENDING or running(row, now - grace):
        return False
    due = row.get("NextAt")
    return not isinstance(due, datetime) or due < now - grace


def _marker(row: Entity, prefix: str) -> str:
    return prefix + str(row["MessageKey"])
