"""The operations page: each mailbox's polls (status, last poll, the error in plain words) and
enabling one that was disabled after failures, through services/mailboxes.py as the CLI's
`mailfiler status` and `mailfiler mailbox enable` do; the poison queues with each message's
stage, reason and attempts, and replay, through services/poison.py as `mailfiler poison` does."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from ..services.audit import audit
from ..services.context import AppContext
from ..services.mailboxes import enable, mailbox_status
from ..services.poison import poison_entries, replay
from ..services.records import RecordError
from ..store.stores import QUEUES, poison
from .access import ADMIN, Principal, check_change, csrf_token
from .pages import BASE, Page, console_actor, html_page, see_other

log = logging.getLogger(__name__)
URL = f"{BASE}/operations"
DONE = {
    "enabled": "The mailbox is enabled; its next poll runs on schedule.",
    "replayed": "The poison messages went back to their queue; they are processed again.",
}
SHOWN = 10  # poison messages listed per queue (the CLI lists up to 32)


def operations_page(ctx: AppContext, params: Mapping[str, str], who: Principal) -> Page:
    mailboxes = mailbox_status(ctx)
    # A stored "Disabled" (after failures) is what enabling undoes; `enabled: false` in the
    # configuration file is not the console's to change.
    for name, row in mailboxes.items():
        mailbox = ctx.config.mailbox(name)
        row["can_enable"] = bool(row["disabled_reason"]) and mailbox is not None and mailbox.enabled
    depths = {queue: ctx.stores.queues.depth(poison(queue)) for queue in QUEUES}
    failures = {queue: poison_entries(ctx.stores, queue, SHOWN) for queue, n in depths.items() if n}
    return html_page(
        200,
        "operations.html",
        who=who,
        mailboxes=mailboxes,
        poison_depths=depths,
        poison_failures=failures,
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
