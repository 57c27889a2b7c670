"""Tasks linked to Outlook events: the event's times are the task's start and due dates.

An event is linked to a task when Mailfiler created it for the task (a single-value extended
property names the task; users do not see or edit it), or when its subject carries the task's
token, e.g. "Call back [TASK-12]" (how a user links an event of their own). When a linked
event moves, the task's dates follow; when it is deleted, the task is unlinked, or closed
(`calendar.on_event_deleted`). Links are kept in `GraphState` (PK `evlink-<mailbox>`, RK a
hash of the event id) and on the task (`EventId`).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from ..core.config import Config, EwsMailbox, GraphMailbox
from ..core.contracts import EventChange, RecordRef
from ..core.tasks import TaskChange
from ..sources.graph.source import GraphSource, graph_datetime
from ..store import tasks as task_rows
from ..store.keys import number_row
from ..store.stores import GRAPH_STATE, RECORDS, Stores
from .tasks import apply_change, move_dates

log = logging.getLogger(__name__)
# Mailfiler's own named property (a fixed GUID for this app): "mailfiler:<type>:<key>".
TASK_PROPERTY = "String {6c1d3f8e-2b4a-4f0e-9a57-3d2f1c8b7e10} Name MailfilerTask"
DEFAULT_LENGTH = timedelta(minutes=30)


def link(stores: Stores, mailbox: str, event_id: str, ref: RecordRef) -> None:
    task_rows.link(stores.table(GRAPH_STATE), mailbox, event_id, ref)
    task_rows.set_event(stores.table(RECORDS), ref, event_id)


def create_event(
    source: GraphSource, stores: Stores, mailbox: GraphMailbox, ref: RecordRef
) -> str | None:
    """An Outlook event for a new task (`calendar.create_events`), spanning its dates."""
    row = stores.table(RECORDS).get(ref.type, ref.key)
    if row is None or row.get("EventId"):
        return None
    dates = task_rows.state_of(row)
    start, due = dates.start, dates.due
    begin = start or due
    if begin is None:
        return None  # no dates to put in a calendar
    end = due if due and due > begin else begin + DEFAULT_LENGTH
    body = {
        "subject": f"{row.get('Title', '')} [{row.get('DisplayId')}]"[:255],
        "start": {"dateTime": begin.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "showAs": "free",
        "isReminderOn": False,
        "singleValueExtendedProperties": [
            {"id": TASK_PROPERTY, "value": f"mailfiler:{ref.type}:{ref.key}"}
        ],
    }
    with source.slots.hold():
        made = source.client.request("POST", f"{source.user}/events", json=body).json()
    event_id = str(made["id"])
    link(stores, mailbox.name, event_id, ref)
    return event_id


def on_event(
    stores: Stores,
    config: Config,
    mailbox: GraphMailbox,
    source: GraphSource,
    event_id: str,
    change: str,
    now: datetime,
) -> str:
    """A change to a calendar event: follow it with its linked task, if it has one."""
    from ..sources.graph.client import GraphNotFound

    linked = task_rows.linked(stores.table(GRAPH_STATE), mailbox.name, event_id)
    if change == "deleted":
        return _deleted(stores, config, mailbox, linked, now)
    try:
        with source.slots.hold():
            event = source.client.get(
                f"{source.user}/events/{quote(event_id, safe='')}",
                {
                    "$select": "id,subject,start,end",
                    "$expand": f"singleValueExtendedProperties($filter=id eq '{TASK_PROPERTY}')",
                },
            )
    except GraphNotFound:
        return _deleted(stores, config, mailbox, linked, now)
    ref = _task_of(stores, config, mailbox, event, linked)
    if ref is None:
        return "event not linked to a task"
    if linked is None or linked.get("TaskKey") != ref.key:
        link(stores, mailbox.name, event_id, ref)
    start, end = graph_datetime(event.get("start")), graph_datetime(event.get("end"))
    return move_dates(stores, config, ref, start, end, now)


def _task_of(
    stores: Stores,
    config: Config,
    mailbox: GraphMailbox,
    event: dict[str, Any],
    linked: dict[str, Any] | None,
) -> RecordRef | None:
    marker = next(
        (
            str(prop.get("value", ""))
            for prop in event.get("singleValueExtendedProperties") or []
            if str(prop.get("id", "")).lower() == TASK_PROPERTY.lower()
        ),
        None,
    )
    return task_of(stores, config, mailbox, str(event.get("subject") or ""), marker, linked)


def task_of(
    stores: Stores,
    config: Config,
    mailbox: GraphMailbox | EwsMailbox,
    subject: str,
    marker: str | None,
    linked: dict[str, Any] | None,
) -> RecordRef | None:
    """The task an event belongs to: Mailfiler's marker, else a task token in its subject,
    else the link kept from before."""
    parts = (marker or "").split(":")
    if len(parts) == 3 and parts[0] == "mailfiler":
        return RecordRef(type=parts[1], key=parts[2])
    if mailbox.tasks is not None:
        task_type = config.record_type(mailbox.tasks.record_type)
        if task_type is not None:
            match = re.search(rf"\[{re.escape(task_type.prefix)}-(\d{{1,12}})\]", subject)
            if match:
                row = stores.table(RECORDS).get(task_type.name, number_row(int(match.group(1))))
                if row is not None:
                    return RecordRef(type=task_type.name, key=str(row["RecordKey"]))
    if linked is not None:
        return task_rows.linked_task(linked)
    return None


def on_polled_event(
    stores: Stores,
    config: Config,
    mailbox: EwsMailbox,
    change: EventChange,
    now: datetime,
) -> str:
    """A calendar item a poll saw change (EWS): its linked task follows, as for Graph."""
    linked = task_rows.linked(stores.table(GRAPH_STATE), mailbox.name, change.event_id)
    if change.change == "deleted":
        return _deleted(stores, config, mailbox, linked, now)
    ref = task_of(stores, config, mailbox, change.subject or "", change.task_property, linked)
    if ref is None:
        return "event not linked to a task"
    if linked is None or linked.get("TaskKey") != ref.key:
        link(stores, mailbox.name, change.event_id, ref)
    return move_dates(stores, config, ref, change.start, change.end, now)


def _deleted(
    stores: Stores,
    config: Config,
    mailbox: GraphMailbox | EwsMailbox,
    linked: dict[str, Any] | None,
    now: datetime,
) -> str:
    if linked is None:
        return "event not linked to a task"
    ref = task_rows.linked_task(linked)
    task_rows.unlink(stores.table(GRAPH_STATE), linked)
    row = stores.table(RECORDS).get(ref.type, ref.key)
    if row is None:
        return "linked task is gone"
    task_rows.set_event(stores.table(RECORDS), ref, "")
    policy = mailbox.calendar
    tasks = mailbox.tasks
    if policy is not None and policy.on_event_deleted == "close" and tasks is not None:
        dates = task_rows.state_of(row)
        change = TaskChange(
            False,
            tasks.completed_status,
            dates.start,
            dates.due,
            "task.updated",
            "linked event deleted",
        )
        apply_change(stores, config, ref, row, change, now)
        return f"task {row.get('DisplayId')}: event deleted, task closed"
    return f"task {row.get('DisplayId')}: event deleted, unlinked"
