"""Flagged mail as task records, and tasks that follow calendar events."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import _Strict


class FlagTasks(_Strict):
    """A flagged mail becomes a task record linked to the mail's record (Graph and IMAP
    mailboxes; IMAP flags carry no dates)."""

    record_type: str
    completed_status: str = Field(
        default="closed", description="the task's status when the flag is completed"
    )
    # What unflagging (flag cleared, not completed) does to the task.
    on_unflag: Literal["keep", "close", "cancel"] = "close"
    cancelled_status: str = "cancelled"


class CalendarLinks(_Strict):
    """Tasks follow the dates of an Outlook event linked to them (Graph mailboxes)."""

    create_events: bool = Field(
        default=False, description="create an event for each new task (marked as Mailfiler's)"
    )
    # What deleting the linked event does to the task: unlink only, or also close it.
    on_event_deleted: Literal["unlink", "close"] = "unlink"
