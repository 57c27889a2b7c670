"""Queue `task-changes`: a polled mailbox (IMAP, EWS) saw a message's flag or a calendar
item change; the task follows.

Polling sources cannot call the tasks code while they list mail: the flagged mail may not be
filed yet. They send what the flag (or the event) is now, and this stage brings the task in
step, waiting (a delayed copy of the message) while the mail is still on its way through the
pipeline. Messages carry states, not transitions, so handling one twice changes nothing.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from ..core.config import EwsMailbox, GraphMailbox, ImapMailbox
from ..core.contracts import EventChange, FlagChange
from ..core.tasks import Flag
from ..services.context import AppContext
from ..services.tasks import FILING_DELAY, MAX_FILING_WAITS, NotFiledYet, sync_flag
from ..store.queues import decode
from ..store.stores import TASK_CHANGES, Stores

log = logging.getLogger(__name__)


def send_task_change(stores: Stores, change: FlagChange, delay_seconds: int | None = None) -> None:
    stores.queues.send(TASK_CHANGES, change, delay_seconds=delay_seconds)


def _kind(body: bytes) -> str:
    """Which contract the message is; a body that is not a JSON object is left to `decode`,
    which says what is wrong with it."""
    try:
        data = json.loads(body)
    except ValueError:
        return "flag"
    return str(data.get("kind", "flag")) if isinstance(data, dict) else "flag"


def handle_task_change(ctx: AppContext, body: bytes, now: datetime) -> str:
    if _kind(body) == "event":
        event = decode(body, EventChange)
        box = ctx.config.mailbox(event.mailbox)
        if not isinstance(box, EwsMailbox) or box.tasks is None or box.calendar is None:
            return "no calendar links for this mailbox"
        from ..services.calendar_links import on_polled_event

        return on_polled_event(ctx.stores, ctx.config, box, event, now)
    change = decode(body, FlagChange)
    mailbox = ctx.config.mailbox(change.mailbox)
    if not isinstance(mailbox, GraphMailbox | ImapMailbox | EwsMailbox) or mailbox.tasks is None:
        return "no tasks for this mailbox"
    try:
        outcome = sync_flag(
            ctx.stores,
            ctx.config,
            mailbox,
            internet_message_id=change.message_id,
            flag=Flag(change.status, change.start, change.due),
            now=now,
        )
    except NotFiledYet:
        if change.attempt + 1 > MAX_FILING_WAITS:
            log.warning("tasks: mailbox=%s flagged mail never filed", change.mailbox)
            return "flagged mail never filed; task skipped"
        retry = change.model_copy(update={"attempt": change.attempt + 1})
        send_task_change(ctx.stores, retry, delay_seconds=FILING_DELAY)
        return "task waits for the mail to be filed"
    return outcome.text


STAGE = "tasks"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `task-changes` (called by its trigger: functions/stage.py)."""
    return handle_task_change(ctx, body, now)
