"""The operations page: each mailbox's polls (status, last poll, the error in plain words) and
enabling one that was disabled after failures, through services/mailboxes.py as the CLI's
`mailfiler status` and `mailfiler mailbox enable` do; the poison queues with each message's
stage, reason and attempts, and replay, through services/poison.py as `mailfiler poison` does;
webhook deliveries dead-lettered (table EventDeliveries) with their reason, and replay, through
services/webhooks.py as `mailfiler events dead|replay` do; and one message's filing status and
its trail (the reasons the map and file stages wrote), looked up by Message-ID or source id
through services/messages.py as `GET /api/messages` does."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..services.audit import audit
from ..services.context import AppContext
from ..services.mailboxes import cursor_lines, enable, mailbox_status
from ..services.messages import message_status, messages_by_source
from ..services.poison import poison_entries, replay
from ..services.records import RecordError
from ..services.webhooks import dead_letters
from ..services.webhooks import replay as replay_deliveries
from ..store.stores import QUEUES, poison
from .access import ADMIN, Principal, check_change, csrf_token
from .pages import BASE, Page, console_actor, html_page, see_other

log = logging.getLogger(__name__)
URL = f"{BASE}/operations"
DONE = {
    "enabled": "The mailbox is enabled; its next poll runs on schedule.",
    "replayed": "The poison messages went back to their queue; they are processed again.",
    "delivered": "The delivery is queued again; the webhook is called once more in a moment.",
}
SHOWN = 10  # poison messages listed per queue (the CLI lists up to 32)
DEAD_SHOWN = 50  # dead deliveries listed, newest first (the CLI lists all)
# What a lookup takes: a Message-ID is at most 998 bytes on a line (RFC 5322); a source id is
# short (a UID, a Graph id, a file name). Longer input is refused, not cut to something else.
MAX_MESSAGE_ID = 998
MAX_SOURCE_ID = 4096
_EVENT_ID = re.compile(r"[0-9a-f]{1,64}")  # services/events.py's ids are 32 hex digits
_WEBHOOK = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # a webhook's name (core/config/base.py)


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def dead_deliveries(ctx: AppContext) -> tuple[list[dict[str, Any]], int]:
    """The dead deliveries, newest first (the first DEAD_SHOWN), and how many there are."""
    rows = sorted(
        dead_letters(ctx.stores),
        key=lambda r: (str(r.get("DeadAt") or ""), str(r["PartitionKey"])),
        reverse=True,
    )
    shown = [
        {
            "event": str(row["PartitionKey"]),
            "webhook": str(row["RowKey"]),
            "type": row.get("EventType"),
            "attempts": row.get("Attempts"),
            "status_code": row.get("LastStatusCode"),
            "dead_at": _iso(row.get("DeadAt")),
            "reason": row.get("Reason") or "",
        }
        for row in rows[:DEAD_SHOWN]
    ]
    return shown, len(rows)


def look_up(ctx: AppContext, params: Mapping[str, str]) -> dict[str, Any] | None:
    """A message by Message-ID (or stored key) or by source id (optionally in one mailbox):
    its filing status and trail. What was typed is only ever data: a Message-ID becomes a hex
    or hashed key (services/messages.py), a source id a table key (store/keys.py)."""
    message_id = params.get("message_id", "").strip()
    source_id = params.get("source_id", "").strip()
    mailbox = params.get("mailbox", "").strip()
    if not message_id and not source_id:
        return None
    asked: dict[str, Any] = {
        "message_id": message_id,
        "source_id": source_id,
        "mailbox": mailbox,
        "error": None,
        "found": [],
    }
    if message_id and source_id:
        return {**asked, "error": "give a Message-ID or a source id, not both"}
    if len(message_id.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_ID:
        return {**asked, "error": f"a Message-ID is at most {MAX_MESSAGE_ID} bytes"}
    if len(source_id) > MAX_SOURCE_ID:
        return {**asked, "error": f"a source id is at most {MAX_SOURCE_ID} characters"}
    if message_id:
        found = message_status(ctx.stores, message_id)
        copy = {"mailbox": None, "source_id": None, "ingested_at": None, "message": found}
        return {**asked, "found": [copy] if found else []}
    if mailbox and ctx.config.mailbox(mailbox) is None:
        return {**asked, "error": "no such mailbox"}
    names = [mailbox] if mailbox else [m.name for m in ctx.config.mailboxes]
    return {**asked, "found": messages_by_source(ctx.stores, names, source_id)}


def operations_page(ctx: AppContext, params: Mapping[str, str], who: Principal) -> Page:
    mailboxes = mailbox_status(ctx)
    # A stored "Disabled" (after failures) is what enabling undoes; `enabled: false` in the
    # configuration file is not the console's to change.
    for name, row in mailboxes.items():
        mailbox = ctx.config.mailbox(name)
        row["can_enable"] = bool(row["disabled_reason"]) and mailbox is not None and mailbox.enabled
        row["cursor"] = cursor_lines(ctx, mailbox) if mailbox is not None else []
    depths = {queue: ctx.stores.queues.depth(poison(queue)) for queue in QUEUES}
    failures = {queue: poison_entries(ctx.stores, queue, SHOWN) for queue, n in depths.items() if n}
    dead, dead_total = dead_deliveries(ctx)
    return html_page(
        200,
        "operations.html",
        who=who,
        mailboxes=mailboxes,
        poison_depths=depths,
        poison_failures=failures,
        dead=dead,
        dead_total=dead_total,
        lookup=look_up(ctx, params),
        mailbox_names=[m.name for m in ctx.config.mailboxes],
        can_admin=who.can(ADMIN),
        csrf=csrf_token(who),
        url=URL,
        notice=DONE.get(params.get("done", "")),
    )


def enable_mailbox(
    ctx: AppContext,
    name: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    who: Principal,
) -> Page:
    """Poll a mailbox disabled after failures again: Admin only, audited with the person."""
    check_change(headers, form.get("csrf"), who, ADMIN)
    if ctx.config.mailbox(name) is None:
        raise RecordError(404, "unknown_mailbox", f"no mailbox {name[:80]!r}")
    enable(ctx, name)
    now = datetime.now(UTC)
    audit(ctx.stores, console_actor(who), "enable_mailbox", None, name, now)
    log.info("console: %s enabled mailbox %s", who.name, name)
    return see_other(URL, "enabled")


def replay_poison(
    ctx: AppContext,
    queue: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    who: Principal,
) -> Page:
    """Send a queue's poison messages back to it (Admin only, audited with the person). The
    stages are idempotent, so a message replayed twice changes nothing the second time."""
    check_change(headers, form.get("csrf"), who, ADMIN)
    if queue not in QUEUES:
        raise RecordError(404, "unknown_queue", f"no queue {queue[:80]!r}")
    moved = replay(ctx.stores, queue, None)
    now = datetime.now(UTC)
    audit(
        ctx.stores,
        console_actor(who),
        "replay_poison",
        None,
        f"{moved} message(s) of {queue}",
        now,
    )
    log.info("console: %s replayed %d message(s) of %s", who.name, moved, queue)
    return see_other(URL, "replayed")


def replay_delivery(
    ctx: AppContext,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    who: Principal,
) -> Page:
    """Queue one dead delivery again (the event to the webhook named in the form), from its
    first attempt: Admin only, audited with the person. A consumer drops an event id it has
    seen, so a delivery replayed twice is harmless."""
    check_change(headers, form.get("csrf"), who, ADMIN)
    event, webhook = form.get("event", "").strip(), form.get("webhook", "").strip()
    if not _EVENT_ID.fullmatch(event) or not _WEBHOOK.fullmatch(webhook):
        raise RecordError(400, "bad_delivery", "name the delivery: its event id and webhook")
    rows = [r for r in dead_letters(ctx.stores, event) if r["RowKey"] == webhook]
    if not rows:
        raise RecordError(404, "unknown_delivery", "no dead delivery of this event to this webhook")
    now = datetime.now(UTC)
    replay_deliveries(ctx.stores, rows, now=now)
    audit(
        ctx.stores, console_actor(who), "replay_delivery", None, f"event {event} to {webhook}", now
    )
    log.info("console: %s replayed delivery of event %s to %s", who.name, event, webhook)
    return see_other(URL, "delivered")
