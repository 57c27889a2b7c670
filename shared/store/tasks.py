"""Tasks from flagged mail (services/tasks.py) and their links to calendar events
(services/calendar_links.py).

A task is a record (table `Records`, PK its type, RK its key) with the flag's dates in fields
`F_Start` and `F_Due` (ISO 8601 text), its parent record (`F_Parent`, `ParentType`,
`ParentKey`) and the event linked to it (`EventId`). A link from an event to its task is kept in
`GraphState`, PK `keys.event_link_partition` (per mailbox), RK `keys.event_link_row` (a hash of
the event id).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..core.contracts import RecordRef
from ..core.tasks import TaskState
from .keys import event_link_partition, event_link_row
from .tables import Entity, Table

_EVENT_ID_CHARS = 1000


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def parse_date(value: Any) -> datetime | None:
    """A task's date as stored (ISO 8601 text), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def state_of(row: Entity) -> TaskState:
    """A task row's status and dates."""
    return TaskState(
        status=str(row.get("Status") or ""),
        start=parse_date(row.get("F_Start")),
        due=parse_date(row.get("F_Due")),
    )


def new_task(
    ref: RecordRef,
    *,
    title: str,
    status: str | None,
    now: datetime,
    mailbox: str,
    message_key: str,
    source_id: str,
    start: datetime | None,
    due: datetime | None,
    parent: RecordRef,
    parent_row: Entity,
) -> Entity:
    """A new task's row, to be created with its number (store/numbers.create_numbered)."""
    return {
        "PartitionKey": ref.type,
        "RowKey": ref.key,
        "Title": title[:1000],
        "Status": status,
        "CreatedAt": now,
        "CreatedFrom": message_key[:400],
        "Mailbox": mailbox,
        "Contact": parent_row.get("Contact"),
        "F_Start": _iso(start),
        "F_Due": _iso(due),
        "F_Parent": parent_row.get("DisplayId"),
        "ParentType": parent.type,
        "ParentKey": parent.key,
        "MessageKey": message_key[:400],
        "SourceId": source_id[:1000],
    }


def task_update(
    *,
    start: datetime | None,
    due: datetime | None,
    status: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The columns a task's change of dates (and status, when given) writes (store/records.py
    merge writes them, with the task's index row)."""
    update: dict[str, Any] = {"F_Start": _iso(start), "F_Due": _iso(due), "UpdatedAt": now}
    if status:
        update["Status"] = status
    return update


def copy_entry(table: Table, entry: Entity, partition: str) -> None:
    """A timeline entry of another record copied into `partition` (history is per record)."""
    copy = {k: v for k, v in entry.items() if not k.startswith("_")}
    table.insert({**copy, "PartitionKey": partition})


def set_event(records: Table, ref: RecordRef, event_id: str) -> None:
    """The event linked to the task ("" when none is any more)."""
    records.upsert(
        {"PartitionKey": ref.type, "RowKey": ref.key, "EventId": event_id[:_EVENT_ID_CHARS]}
    )


def link(graph_state: Table, mailbox: str, event_id: str, ref: RecordRef) -> None:
    graph_state.upsert(
        {
            "PartitionKey": event_link_partition(mailbox),
            "RowKey": event_link_row(event_id),
            "EventId": event_id[:_EVENT_ID_CHARS],
            "TaskType": ref.type,
            "TaskKey": ref.key,
        }
    )


def linked(graph_state: Table, mailbox: str, event_id: str) -> Entity | None:
    """The link of an event to its task, if one was kept."""
    return graph_state.get(event_link_partition(mailbox), event_link_row(event_id))


def linked_task(link_row: Entity) -> RecordRef:
    return RecordRef(type=str(link_row["TaskType"]), key=str(link_row["TaskKey"]))


def unlink(graph_state: Table, link_row: Entity) -> None:
    graph_state.delete(link_row["PartitionKey"], link_row["RowKey"])
