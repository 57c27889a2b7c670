"""Mail that could not be filed moves to its mailbox's `failure_folder`, where people see it.

Called once a message of the `inbound` or `filing` queue has gone to the poison queue, so the
raw mail is safe (Blob Storage, and the poison message says why). After a fix, `mailfiler
poison replay` files it; its after-filing actions then find it in the failure folder.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from ..core.contracts import MailboxAction
from ..store.backoff import seconds_left
from .actions import act
from .context import AppContext
from .server_busy import note_busy

log = logging.getLogger(__name__)


def move_failed(ctx: AppContext, body: bytes, reason: str, now: datetime) -> bool:
    """Move the mail a poisoned `inbound`/`filing` message names (every mail of a bundle);
    True if asked of the source (for each of them)."""
    try:
        data = json.loads(body)
        named = data["mails"] if isinstance(data, dict) and "mails" in data else [data]
        mails = [
            (str(d["mailbox"]), str(d["source_id"]), str(d.get("message_key") or "")) for d in named
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # too broken to name its mail; the poison queue has it
    moved = [_move(ctx, *mail, reason, now) for mail in mails]
    return bool(moved) and all(moved)


def _move(
    ctx: AppContext, mailbox_name: str, source_id: str, message_key: str, reason: str, now: datetime
) -> bool:
    mailbox = ctx.config.mailbox(mailbox_name)
    if mailbox is None or not mailbox.failure_folder:
        return False
    if seconds_left(ctx.stores, mailbox_name, now):
        log.warning("failure folder: mailbox=%s server asked for quiet: not moved", mailbox_name)
        return False
    try:
        act(
            ctx.stores,
            ctx.source(mailbox_name),
            mailbox=mailbox_name,
            source_id=source_id,
            message_key=message_key or f"failed-{source_id[:200]}",
            record=None,
            actions=(MailboxAction(action="move", folder=mailbox.failure_folder),),
            why=f"failed: {reason[:300]}",
            now=now,
        )
    except Exception as exc:
        # The mail stays where it is; the poison message is what matters.
        note_busy(ctx.stores, mailbox_name, exc, now)
        log.warning("failure folder: mailbox=%s could not move: %s", mailbox_name, exc)
        return False
    return True
