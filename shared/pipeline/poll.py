"""The polling cycle: ingest every enabled mailbox, each on its own, and record how it went."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.config import EwsMailbox, GraphMailbox, ImapMailbox, Mailbox
from ..sources.graph.state import SUBSCRIPTIONS
from ..store.backoff import seconds_left
from ..store.cursors import Cursors
from ..store.leases import release_lease, take_lease
from ..store.stores import GRAPH_FETCH, GRAPH_STATE, MAILBOXES, POLLS
from .context import AppContext
from .ingest import IngestSummary, ingest_mailbox
from .server_busy import note_busy

log = logging.getLogger(__name__)
STATUS_PARTITION = "status"
LEASES = "lease"  # Mailboxes PK of the poll leases: RK mailbox
POLL_LEASE = timedelta(minutes=15)  # longer than any poll; a crashed poller's lease lapses


def poll_all(
    ctx: AppContext, now: datetime, limit_per_mailbox: int | None = None
) -> dict[str, str]:
    """Poll every enabled mailbox now, one after the other, whatever its interval (the CLI and
    tests; the timer fans out one `polls` message per mailbox that is due instead). One
    failure never stops the rest."""
    statuses = _statuses(ctx)
    outcome: dict[str, str] = {}
    for mailbox in ctx.config.mailboxes:
        why_not = not_due(ctx, mailbox, statuses.get(mailbox.name), now, interval=False)
        if why_not:
            outcome[mailbox.name] = why_not
            continue
        outcome[mailbox.name] = poll_one(ctx, mailbox.name, now, limit=limit_per_mailbox)
    return outcome


def schedule_polls(ctx: AppContext, now: datetime) -> dict[str, str]:
    """The timer's part: one `polls` message per mailbox that is due, so a slow or failing
    server delays no other mailbox (each poll runs on its own worker)."""
    statuses = _statuses(ctx)
    outcome: dict[str, str] = {}
    for mailbox in ctx.config.mailboxes:
        why_not = not_due(ctx, mailbox, statuses.get(mailbox.name), now)
        if why_not:
            outcome[mailbox.name] = why_not
            continue
        send_poll(ctx, mailbox.name)
        outcome[mailbox.name] = "scheduled"
    return outcome


def send_poll(ctx: AppContext, name: str, delay_seconds: int | None = None) -> None:
    body = json.dumps({"v": 1, "mailbox": name}).encode()
    ctx.stores.queues.send_bytes(POLLS, body, delay_seconds=delay_seconds)


def _statuses(ctx: AppContext) -> dict[str, dict[str, Any]]:
    return {e["RowKey"]: e for e in ctx.stores.table(MAILBOXES).partition(STATUS_PARTITION)}


def not_due(
    ctx: AppContext,
    mailbox: Mailbox,
    status: dict[str, Any] | None,
    now: datetime,
    *,
    interval: bool = True,
) -> str | None:
    """Why this mailbox is not polled now (None: it is due)."""
    if not mailbox.enabled:
        return "disabled"
    if status and status.get("Disabled"):
        return "disabled after failures"
    wait = seconds_left(ctx.stores, mailbox.name, now)
    if wait:  # the server asked for quiet: no request of any kind before it ends
        return f"backing off ({wait} s left)"
    notified = isinstance(mailbox, GraphMailbox) and not mailbox.polling_only
    if notified and not _graph_sync_due(ctx, mailbox.name, status, now):
        return "notifications"
    if interval and isinstance(mailbox, ImapMailbox | EwsMailbox) and status:
        last = status.get("LastPoll")
        # A little slack: a poll that took a few seconds must not push the next one a minute.
        if isinstance(last, datetime) and now - last < timedelta(
            minutes=mailbox.poll_minutes, seconds=-15
        ):
            return "not due"
    return None


def poll_one(ctx: AppContext, name: str, now: datetime, *, limit: int | None = None) -> str:
    """Poll one mailbox under its lease (two polls of one mailbox never overlap)."""
    mailbox = ctx.config.mailbox(name)
    if mailbox is None:
        return "not configured"
    cap = mailbox.max_per_poll if isinstance(mailbox, ImapMailbox | EwsMailbox) else None
    limit = min(x for x in (limit, cap) if x is not None) if (limit or cap) else None
    wait = seconds_left(ctx.stores, name, now)
    if wait:  # a delayed or duplicate poll inside the server's back-off
        return f"backing off; {wait} s left"
    holder = uuid.uuid4().hex
    if not take_lease(ctx.stores.table(MAILBOXES), LEASES, name, holder, now, POLL_LEASE):
        return "busy (another poll runs)"
    try:
        try:
            source = ctx.source(name)
            cursors = Cursors(ctx.stores, name, mailbox.kind)
            summary = ingest_mailbox(
                ctx.stores, name, source, now=now, limit=limit, cursors=cursors
            )
        except Exception as exc:
            delay = note_busy(ctx.stores, name, exc, now)
            if delay is not None:
                # The server's back-off, recorded for every stage and honoured by a delayed
                # poll: no sleeping in a function.
                log.warning("poll: mailbox=%s server busy; again in %d s", name, delay)
                send_poll(ctx, name, delay_seconds=delay)
                ctx.stores.table(MAILBOXES).upsert(
                    {"PartitionKey": STATUS_PARTITION, "RowKey": name, "LastBusyAt": now}
                )
                return f"busy; again in {delay} s"
            log.exception("poll: mailbox=%s failed", name)
            record_status(ctx, name, mailbox.kind, now, error=f"{type(exc).__name__}: {exc}")
            return "failed"
        record_status(ctx, name, mailbox.kind, now, summary=summary)
        if isinstance(mailbox, GraphMailbox):
            _after_delta(ctx, mailbox, summary)
        if summary.more:
            send_poll(ctx, name)  # a backlog: the next page now, not at the next tick
            return f"queued {summary.queued}; more to come"
        return f"queued {summary.queued}"
    finally:
        release_lease(ctx.stores.table(MAILBOXES), LEASES, name, holder)


def _after_delta(ctx: AppContext, mailbox: GraphMailbox, summary: IngestSummary) -> None:
    if summary.complete:  # else the next poll goes on where this one stopped
        _resync_done(ctx, mailbox.name)
    # Mail already ingested that delta lists again changed (moved, flagged): the fetch stage
    # handles it as it handles an `updated` notification, with the version delta listed, so
    # our own PATCH or move coming back costs no fetch.
    for item_id in summary.changed:
        version = summary.versions.get(item_id)
        ctx.stores.queues.send_bytes(
            GRAPH_FETCH,
            json.dumps(
                {
                    "v": 1,
                    "mailbox": mailbox.name,
                    "kind": "message",
                    "id": item_id,
                    "change": "updated",
                    "etags": [version] if version else None,
                }
            ).encode(),
        )


def _graph_sync_due(
    ctx: AppContext, name: str, status: dict[str, Any] | None, now: datetime
) -> bool:
    """A Graph mailbox with change notifications runs delta when asked to (a `missed` or
    recreated subscription) and on the safety schedule."""
    last = status.get("LastSuccess") if status else None
    if not isinstance(last, datetime):
        return True
    if now - last >= timedelta(minutes=ctx.config.graph.safety_sync_minutes):
        return True
    row = ctx.stores.table(GRAPH_STATE).get(name, "resync")
    return bool(row and row.get("Requested"))


def _resync_done(ctx: AppContext, name: str) -> None:
    ctx.stores.table(GRAPH_STATE).upsert(
        {"PartitionKey": name, "RowKey": "resync", "Requested": False}
    )


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
    previous = table.get(STATUS_PARTITION, name) or {}
    entity: dict[str, Any] = {
        "PartitionKey": STATUS_PARTITION,
        "RowKey": name,
        "Kind": kind,
        "LastPoll": now,
    }
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
            entity.update(
                Disabled=True, DisabledReason=f"{failures} failed polls; last: {error}"[:2000]
            )
    table.upsert(entity)


def enable(ctx: AppContext, name: str) -> None:
    """Poll a mailbox that was disabled after failures again (after fixing the cause)."""
    ctx.stores.table(MAILBOXES).upsert(
        {
            "PartitionKey": STATUS_PARTITION,
            "RowKey": name,
            "Disabled": False,
            "DisabledReason": "",
            "ConsecutiveFailures": 0,
        }
    )


def mailbox_status(ctx: AppContext, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    now = now or datetime.now(UTC)
    stored = {e["RowKey"]: e for e in ctx.stores.table(MAILBOXES).partition(STATUS_PARTITION)}
    out: dict[str, dict[str, Any]] = {}
    for mailbox in ctx.config.mailboxes:
        entry = stored.get(mailbox.name, {})
        failures = int(entry.get("ConsecutiveFailures", 0))
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
            "warnings": _warnings(ctx, mailbox, now),
        }
        if isinstance(mailbox, GraphMailbox) and mailbox.enabled and not mailbox.polling_only:
            subs = {
                row["RowKey"].partition("~")[2]: {
                    "status": row.get("Status"),
                    "expires": _iso(row.get("Expires")),
                    "last_error": row.get("LastError") or None,
                }
                for row in ctx.stores.table(GRAPH_STATE).partition(
                    SUBSCRIPTIONS, row_from=f"{mailbox.name}~", row_before=f"{mailbox.name}~~"
                )
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
