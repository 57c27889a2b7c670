"""Flags to tasks, and calendar events to task dates: what a change means for the task.

Pure: the flag (or event) as Graph reports it now, and the task as stored, in; the change to
make, out. The pipeline reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .config import FlagTasks

FlagStatus = Literal["notFlagged", "flagged", "complete"]


@dataclass(frozen=True)
class Flag:
    status: str
    start: datetime | None = None
    due: datetime | None = None


@dataclass(frozen=True)
class TaskState:
    status: str
    start: datetime | None = None
    due: datetime | None = None


@dataclass(frozen=True)
class TaskChange:
    create: bool
    status: str | None  # the new status, None: unchanged
    start: datetime | None
    due: datetime | None
    event: Literal["task.created", "task.updated", "task.completed"]
    why: str


def is_open(task: TaskState, policy: FlagTasks) -> bool:
    return task.status not in (policy.completed_status, policy.cancelled_status)


def on_flag(
    flag: Flag, task: TaskState | None, policy: FlagTasks, open_status: str
) -> TaskChange | None:
    """What a message's flag, as it is now, does to its task (None: nothing)."""
    if flag.status == "flagged":
        if task is None:
            return TaskChange(True, open_status, flag.start, flag.due, "task.created", "flagged")
        if not is_open(task, policy):
            return TaskChange(
                False, open_status, flag.start, flag.due, "task.updated", "flagged again"
            )
        if (flag.start, flag.due) != (task.start, task.due):
            return TaskChange(False, None, flag.start, flag.due, "task.updated", "flag dates")
        return None
    if task is None or not is_open(task, policy):
        return None  # completed or cleared before a task existed, or the task is done already
    if flag.status == "complete":
        return TaskChange(
            False, policy.completed_status, task.start, task.due, "task.completed", "flag completed"
        )
    if policy.on_unflag == "keep":
        return None
    status = policy.completed_status if policy.on_unflag == "close" else policy.cancelled_status
    return TaskChange(False, status, task.start, task.due, "task.updated", "flag cleared")


def on_event_moved(
    start: datetime | None, end: datetime | None, task: TaskState
) -> TaskChange | None:
    """A linked calendar event's times are the task's start and due dates."""
    if (start, end) == (task.start, task.due):
        return None
    return TaskChange(False, None, start, end, "task.updated", "linked event moved")
