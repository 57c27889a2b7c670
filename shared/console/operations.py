"""The operations page: each mailbox's polls (status, last poll, the error in plain words) and
enabling one that was disabled after failures, through services/mailboxes.py as the CLI's
`mailfiler status` and `mailfiler mailbox enable` do; the poison queues' depths."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from ..services.audit import Actor, audit
from ..services.context import AppContext
from ..services.mailboxes import enable, mailbox_status
from ..services.records import RecordError
from ..store.stores import QUEUES, poison
from .access import ADMIN, Principal, check_change, csrf_token
from .pages import BASE, Page, html_page

log = logging.getLogger(__name__)
URL = f"{BASE}/operations"
DONE = {"enabled": "The mailbox is enabled; its next poll runs on schedule."}


def operations_page(ctx: AppContext, params: Mapping[str, str], who: Principal) -> Page:
    mailboxes = mailbox_status(ctx)
    # A stored "Disabled" (after failures) is what enabling undoes; `enabled: false` in the
    # configuration file is not the console's to change.
    for name, row in mailboxes.items():
        mailbox = ctx.config.mailbox(name)
        row["can_enable"] = bool(row["disabled_reason"]) and mailbox is not None and mailbox.enabled
    depths = {queue: ctx.stores.queues.depth(poison(queue)) for queue in QUEUES}
    return html_page(
        200,
        "operations.html",
        who=who,
        mailboxes=mailboxes,
        poison_depths=depths,
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
    audit(ctx.stores, Actor(name=who.name, source="console"), "enable_mailbox", None, name, now)
    log.info("console: %s enabled mailbox %s", who.name, name)
    return Page(303, b"", {"Location": f"{URL}?done=enabled", "Cache-Control": "no-store"})
