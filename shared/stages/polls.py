"""The polling cycle: ingest every enabled mailbox, each on its own, and record how it went."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from ..core.config import EwsMailbox, GraphMailbox, ImapMailbox, Mailbox
from ..services.context import AppContext
from ..services.failures import describe_failure, fingerprint
from ..services.ingest import IngestSummary, ingest_mailbox
from ..services.mailboxes import record_status, resync_done, status_rows
from ..services.server_busy import note_busy
from ..store import mailbox_status
from ..store.backoff import seconds_left
from ..store.cursors import Cursors
from ..store.leases import release_lease, take_lease
from ..store.stores import GRAPH_FETCH, GRAPH_STATE, INBOUND, MAILBOXES, POLLS

log = logging.getLogger(__name__)
LEASES = "lease"  # Mailboxes PK of the poll leases: RK mailbox
POLL_LEASE = timedelta(minutes=15)  # longer than any poll; a crashed poller's lease lapses
# Per mailbox, the fingerprint of the configuration and secrets its last failed poll in this
# process ran with (services/failures.py). Config and app settings are read at start, so a
# fix means a new process or a new fingerprint: either way the mailbox is polled at once.
_FAILED_WITH: dict[str, str] = {}


def poll_all(
    ctx: AppContext, now: datetime, limit_per_mailbox: int | None = None
) -> dict[str, str]:
    """Poll every enabled mailbox now, one after the other, whatever its interval (the CLI and
    tests; the timer fans out one `polls` message per mailbox that is due instead). One
    failure never stops the rest."""
    statuses = status_rows(ctx)
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
    statuses = status_rows(ctx)
    outcome: dict[str, str] = {}
    for mailbox in ctx.config.mailboxes:
        why_not = not_due(ctx, mailbox, statuses.get(mailbox.name), now)
        if why_not:
            outcome[mailbox.name] = why_not
            continue
        send_poll(ctx, mailbox.name)
        outcome[mailbox.name] = "scheduled"
    return outcome


def send_poll(
    ctx: AppContext, name: str, delay_seconds: int | None = None, *, continues: bool = False
) -> None:
    """`continues`: the rest of a backfill, run once the inbound backlog is below a poll's
    worth (see `handle`)."""
    message: dict[str, object] = {"v": 1, "mailbox": name}
    if continues:
        message["continues"] = True
    ctx.stores.queues.send_bytes(POLLS, json.dumps(message).encode(), delay_seconds=delay_seconds)


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
        if status.get("ConsecutiveFailures"):
            settings = fingerprint(mailbox)
            if _FAILED_WITH.get(mailbox.name) != settings:
                # Failing, and its settings changed since (or this process has not tried
                # them yet): try the fix now, once, not at the end of the interval.
                _FAILED_WITH[mailbox.name] = settings
                return None
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
                mailbox_status.note_busy(ctx.stores.table(MAILBOXES), name, now)
                return f"busy; again in {delay} s"
            failure = describe_failure(mailbox, exc)
            _FAILED_WITH[name] = fingerprint(mailbox)
            if failure.expected:  # a wrong password or a server away: one line, no traceback
                log.warning("poll: mailbox=%s failed: %s", name, failure.line())
            else:
                log.exception("poll: mailbox=%s failed: %s", name, failure.line())
            record_status(ctx, name, mailbox.kind, now, error=failure.text())
            return "failed"
        _FAILED_WITH.pop(name, None)
        record_status(ctx, name, mailbox.kind, now, summary=summary)
        if isinstance(mailbox, GraphMailbox):
            _after_delta(ctx, mailbox, summary)
        if summary.more:
            send_poll(ctx, name)  # a backlog: the next page now, not at the next tick
            return f"queued {summary.queued}; more to come"
        if summary.limited:
            # A backfill: the rest follows as soon as the inbound backlog allows (`handle`),
            # not a poll interval later (10,000 mails were 20 minutes of polls at 500 each).
            send_poll(ctx, name, continues=True)
            return f"queued {summary.queued}; more to come"
        return f"queued {summary.queued}"
    finally:
        release_lease(ctx.stores.table(MAILBOXES), LEASES, name, holder)


def _after_delta(ctx: AppContext, mailbox: GraphMailbox, summary: IngestSummary) -> None:
    if summary.complete:  # else the next poll goes on where this one stopped
        resync_done(ctx, mailbox.name)
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


STAGE = "poll"  # in logs, metrics and poison messages
MAX_PER_POLL = 500  # back-pressure: a huge backfill is spread over several polls
# The next part of a backfill waits while this many inbound messages still wait to be mapped:
# the backlog stays bounded (mail is filed in the order it arrives, and Azurite's queue calls
# cost in proportion to the messages waiting: 3.7 ms a mail at 100, 14 ms at 4,000). A
# backfill's messages are bundles (contracts.BUNDLE_MAILS mails, fewer when large), so this is
# about one poll's worth of mail waiting, as when each message carried one.
BACKLOG_BEFORE_MORE = 32
CONTINUE_SECONDS = 2  # the delay of a continuation that found the backlog too long


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `polls`: one mailbox's poll, under its lease. Its failure is recorded,
    not retried here (the next timer tick schedules it again)."""
    message = json.loads(body)
    name = str(message["mailbox"])
    if message.get("continues"):
        waiting = ctx.stores.queues.depth(INBOUND) or 0
        if waiting >= BACKLOG_BEFORE_MORE:
            # A delayed message, not a sleep: the poll goes on once the stages catch up.
            send_poll(ctx, name, delay_seconds=CONTINUE_SECONDS, continues=True)
            log.info("poll: mailbox=%s backfill waits: %d inbound messages", name, waiting)
            return "backfill waits for the backlog"
    outcome = poll_one(ctx, name, now, limit=MAX_PER_POLL)
    log.info("poll: mailbox=%s %s", name, outcome)
    return outcome
