"""Queue `flag-changes`: a polled mailbox saw a message's \\Flagged change; its task follows.

Polling sources (IMAP) cannot call the tasks code while they list mail: the flagged mail may
not be filed yet. They send what the flag is now, and this stage brings the task in step,
waiting (a delayed copy of the message) while the mail is still on its way through the
pipeline. The message carries the state, not the transition, so handling it twice changes
nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ..core.config import GraphMailbox, ImapMailbox
from ..core.contracts import FlagChange
from ..core.tasks import Flag
from ..store.queues import decode
from ..store.stores import FLAG_CHANGES, Stores
from .context import AppContext
from .tasks import NotFiledYet, sync_flag

log = logging.getLogger(__name__)
FILING_DELAY = 15  # seconds before a flag is looked at again when its mail is not filed yet
MAX_FILING_WAITS = 20


def send_flag_change(stores: Stores, change: FlagChange, delay_seconds: int | None = None) -> None:
    stores.queues.send(FLAG_CHANGES, change, delay_seconds=delay_seconds)


def handle_flag_change(ctx: AppContext, body: bytes, now: datetime) -> str:
    change = decode(body, FlagChange)
    mailbox = ctx.config.mailbox(change.mailbox)
    if not isinstance(mailbox, GraphMailbox | ImapMailbox) or mailbox.tasks is None:
        return "no tasks for this mailbox"
    try:
        outcome = sync_flag(
            ctx.stores,
            ctx.config,
            mailbox,
            internet_message_id=change.message_id,
            flag=Flag(change.status),
            now=now,
        )
    except NotFiledYet:
        if change.attempt + 1 > MAX_FILING_WAITS:
            log.warning("tasks: mailbox=%s flagged mail never filed", change.mailbox)
            return "flagged mail never filed; task skipped"
        retry = change.model_copy(update={"attempt": change.attempt + 1})
        send_flag_change(ctx.stores, retry, delay_seconds=FILING_DELAY)
        return "task waits for the mail to be filed"
    return outcome.text
