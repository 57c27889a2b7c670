"""Tasks from flagged mail (Graph and IMAP mailboxes with `tasks:`), kept in step with the
flag and with a linked calendar event.

A task is a record of the configured type, keyed by the mailbox and the flagged message, so
handling a flag change twice changes nothing. It names its parent (the record the mail is filed
on: field `Parent`), carries the flag's dates (fields `Start`, `Due`, ISO 8601), shows the mail
in its timeline, and emits `task.created`, `task.updated`, `task.completed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.config import Config, EwsMailbox, FlagTasks, GraphMailbox, ImapMailbox
from ..core.contracts import Event, RecordRef
from ..core.decide import record_key
from ..core.errors import MailfilerError
from ..core.message import id_key
from ..core.mime import message_id_of
from ..core.tasks import Flag, TaskChange, on_event_moved, on_flag
from ..store import records
from ..store import tasks as task_rows
from ..store.numbers import create_numbered
from ..store.stores import MESSAGES, RECORDS, TIMELINE, Stores
from . import events
from .actions import MAILFILER
from .audit import audit, record_partition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlagOutcome:
    text: str
    created: RecordRef | None = None


class NotFiledYet(RuntimeError, MailfilerError):
    """The flagged mail is still on its way through the pipeline: try again shortly."""


FILING_DELAY = 15  # seconds before a flag is looked at again when its mail is not filed yet
MAX_FILING_WAITS = 20


def task_ref(policy: FlagTasks, mailbox: str, message_key: str) -> RecordRef:
    return RecordRef(
        type=policy.record_type,
        key=record_key(policy.record_type, f"flag\x00{mailbox}\x00{message_key}"),
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def sync_flag(
    stores: Stores,
    config: Config,
    mailbox: GraphMailbox | ImapMailbox | EwsMailbox,
    *,
    internet_message_id: str | None,
    flag: Flag,
    now: datetime,
) -> FlagOutcome:
    """Bring the task of one message in step with its flag. Raises NotFiledYet."""
    policy = mailbox.tasks
    message_id = message_id_of(internet_message_id)
    if policy is None or not message_id:
        return FlagOutcome("no tasks")
    message_key = id_key(message_id)
    ref = task_ref(policy, mailbox.name, message_key)
    row = stores.table(RECORDS).get(ref.type, ref.key)
    task = task_rows.state_of(row) if row else None
    record_type = config.record_type(policy.record_type)
    open_status = record_type.statuses[0] if record_type else "new"
    change = on_flag(flag, task, policy, open_status)
    if change is None:
        return FlagOutcome("task unchanged")
    if change.create:
        filed = stores.table(MESSAGES).get(message_key, "msg")
        if filed is None:
            raise NotFiledYet(f"{message_key[:40]} is not filed yet")
        display = _create(stores, config, mailbox, ref, filed, change, message_key, now)
        if display is not None:
            _emit(stores, config, ref, display, change, message_key, now)
            return FlagOutcome(f"task {display} created", ref)
        row = stores.table(RECORDS).get(ref.type, ref.key)  # created meanwhile: update it
    assert row is not None
    apply_change(stores, config, ref, row, change, now, message_key=message_key)
    return FlagOutcome(f"task {row.get('DisplayId')}: {change.why}")


def apply_change(
    stores: Stores,
    config: Config,
    ref: RecordRef,
    row: dict[str, Any],
    change: TaskChange,
    now: datetime,
    *,
    message_key: str | None = None,
) -> None:
    columns = task_rows.task_update(
        start=change.start, due=change.due, status=change.status, now=now
    )
    records.merge(stores, ref, columns, current=row)  # with its index row
    detail = f"{change.why}: status {change.status or row.get('Status')}"
    audit(stores, MAILFILER, "update", ref, detail, now)
    _emit(stores, config, ref, row.get("DisplayId"), change, message_key, now)


def _create(
    stores: Stores,
    config: Config,
    mailbox: GraphMailbox | ImapMailbox | EwsMailbox,
    ref: RecordRef,
    filed: dict[str, Any],
    change: TaskChange,
    message_key: str,
    now: datetime,
) -> str | None:
    parent = RecordRef(type=str(filed["RecordType"]), key=str(filed["RecordKey"]))
    parent_row = stores.table(RECORDS).get(parent.type, parent.key) or {}
    entry = stores.table(TIMELINE).get(record_partition(parent), str(filed.get("TimelineRow")))
    subject = str((entry or {}).get("Subject") or parent_row.get("Title") or "")
    record_type = config.record_type(ref.type)
    prefix = record_type.prefix if record_type else ref.type.upper()
    entity = task_rows.new_task(
        ref,
        title=f"Follow up: {subject}",
        status=change.status,
        now=now,
        mailbox=mailbox.name,
        message_key=message_key,
        source_id=str(filed.get("SourceId") or ""),
        start=change.start,
        due=change.due,
        parent=parent,
        parent_row=parent_row,
    )
    number, existing = create_numbered(stores, ref.type, prefix, entity)
    if existing is not None:
        return None
    if entry is not None:
        # The flagged mail is on the task's timeline too (a copy: history is per record).
        task_rows.copy_entry(stores.table(TIMELINE), entry, record_partition(ref))
    display = f"{prefix}-{number}"
    audit(
        stores,
        MAILFILER,
        "create",
        ref,
        f"flagged in {mailbox.name}; parent {parent_row.get('DisplayId')}",
        now,
    )
    audit(stores, MAILFILER, "task", parent, f"task {display} from a flag in {mailbox.name}", now)
    return display


def _emit(
    stores: Stores,
    config: Config,
    ref: RecordRef,
    display: str | None,
    change: TaskChange,
    message_key: str | None,
    now: datetime,
) -> None:
    if not events.enabled(config):
        return
    state = f"{change.status}|{_iso(change.start)}|{_iso(change.due)}"
    events.emit(
        stores,
        [
            Event(
                id=events.event_id(change.event, ref.type, ref.key, state),
                type=change.event,
                occurred_at=now,
                record=ref,
                display_id=display,
                message_key=message_key,
                data={
                    "status": change.status,
                    "start": _iso(change.start),
                    "due": _iso(change.due),
                    "why": change.why,
                },
            )
        ],
    )


def move_dates(
    stores: Stores,
    config: Config,
    ref: RecordRef,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> str:
    """A linked calendar event moved: the task's dates follow."""
    row = stores.table(RECORDS).get(ref.type, ref.key)
    if row is None:
        return "linked task is gone"
    change = on_event_moved(start, end, task_rows.state_of(row))
    if change is None:
        return "task dates unchanged"
    apply_change(stores, config, ref, row, change, now)
    return f"task {row.get('DisplayId')}: dates moved"
