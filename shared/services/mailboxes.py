"""Mailboxes as operators see them: how each one's polls went, why one is failing or disabled, and
enabling it again (rows in table Mailboxes, PK `status`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ..core.config import GraphMailbox, ImapMailbox, Mailbox
from ..store import mailbox_status as status_store
from ..store import subscriptions
from ..store.cursors import Cursors
from ..store.stores import GRAPH_STATE, MAILBOXES
from .context import AppContext
from .failures import split_stored
from .ingest import IngestSummary

log = logging.getLogger(__name__)


def status_rows(ctx: AppContext) -> dict[str, dict[str, Any]]:
    return status_store.all_status(ctx.stores.table(MAILBOXES))


def resync_done(ctx: AppContext, name: str) -> None:
    status_store.resync_done(ctx.stores.table(GRAPH_STATE), name)


def record_status(
    ctx: AppContext,
    name: str,
    kind: str,
    now: datetime,
    *,
    summary: IngestSummary | None = None,
    error: str | None = None,
) -> None:
    table = ctx.stores.table(MAILBOXES)
    previous = status_store.status(table, name) or {}
    entity: dict[str, Any] = {"Kind": kind, "LastPoll": now}
    if error is None and summary is not None:
        entity.update(
            LastSuccess=now,
            ConsecutiveFailures=0,
            LastError="",
            LastQueued=summary.queued,
            LastFailedItems=len(summary.failed),
        )
    else:
        failures = int(previous.get("ConsecutiveFailures", 0)) + 1
        entity.update(
            ConsecutiveFailures=failures,
            LastError=(error or "")[:2000],
            LastErrorAt=now,
        )
        mailbox = ctx.config.mailbox(name)
        limit = getattr(mailbox, "disable_after_failures", None)
        if limit is not None and failures >= limit:
            # Polling on would only hammer a server that refuses (and may lock the account).
            log.error("poll: mailbox=%s disabled after %d failures", name, failures)
            last, _ = split_stored(error)
            entity.update(
                Disabled=True, DisabledReason=f"{failures} failed polls; last: {last}"[:2000]
            )
    status_store.put_status(table, name, **entity)


def enable(ctx: AppContext, name: str) -> None:
    """Poll a mailbox that was disabled after failures again (after fixing the cause)."""
    status_store.enable(ctx.stores.table(MAILBOXES), name)


def mailbox_status(ctx: AppContext, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    now = now or datetime.now(UTC)
    stored = status_rows(ctx)
    out: dict[str, dict[str, Any]] = {}
    for mailbox in ctx.config.mailboxes:
        entry = stored.get(mailbox.name, {})
        failures = int(entry.get("ConsecutiveFailures", 0))
        error, fix = split_stored(entry.get("LastError"))
        state = (
            "disabled"
            if not mailbox.enabled
            else ("failing" if failures else ("ok" if entry.get("LastSuccess") else "pending"))
        )
        if entry.get("Disabled"):
            state = "disabled"
        out[mailbox.name] = {
            "kind": mailbox.kind,
            "status": state,
            "disabled_reason": entry.get("DisabledReason") or None,
            "last_poll": _iso(entry.get("LastPoll")),
            "last_success": _iso(entry.get("LastSuccess")),
            "consecutive_failures": failures,
            "last_error": entry.get("LastError") or None,
            # The last failure in plain words and the setting to fix (services/failures.py),
            # for a page or a command to print apart.
            "error": error if failures or entry.get("Disabled") else None,
            "fix": fix if failures or entry.get("Disabled") else None,
            "warnings": _warnings(ctx, mailbox, now),
        }
        if isinstance(mailbox, GraphMailbox) and mailbox.enabled and not mailbox.polling_only:
            subs = {
                kind: {
                    "status": row.get("Status"),
                    "expires": _iso(row.get("Expires")),
                    "last_error": row.get("LastError") or None,
                }
                for kind, row in subscriptions.of_mailbox(
                    ctx.stores.table(GRAPH_STATE), mailbox.name
                ).items()
            }
            out[mailbox.name]["subscriptions"] = subs
            if any(s["status"] != "active" for s in subs.values()):
                out[mailbox.name]["status"] = "failing"
    return out


def _warnings(ctx: AppContext, mailbox: Mailbox, now: datetime) -> list[str]:
    """What will fail soon if nobody acts (a refresh token about to lapse, no sign-in yet)."""
    if isinstance(mailbox, ImapMailbox) and mailbox.enabled:
        from ..sources.imap.oauth import credential_warnings

        return credential_warnings(mailbox, ctx.stores, now)
    return []


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def request_resync(ctx: AppContext, mailbox: str, now: datetime, *, reason: str) -> None:
    """The next poll runs delta for this mailbox, whatever its schedule."""
    status_store.request_resync(ctx.stores.table(GRAPH_STATE), mailbox, now, reason)


CURSOR_VALUE_CHARS = 24  # longer values (delta links, sync states) are named, not shown


def cursor_lines(ctx: AppContext, mailbox: Mailbox) -> list[str]:
    """Where each watched folder's next poll starts, one line per folder, for people: short
    values as they are (`LastUid 1234`), long opaque ones (a delta link, a sync state) named
    with their length. Local folders keep no cursor: an empty list."""
    lines = []
    for folder, values in sorted(Cursors(ctx.stores, mailbox.name, mailbox.kind).load().items()):
        shown = []
        for key, value in sorted(values.items()):
            text = str(value)
            if len(text) > CURSOR_VALUE_CHARS:
                text = f"({len(text)} characters)"
            shown.append(f"{key} {text}")
        lines.append(f"{folder}: {', '.join(shown) or 'started'}")
    return lines
