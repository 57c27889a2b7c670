"""A mailbox server's back-off, shared by every stage that talks to that server.

When a server asks us to wait (EWS ErrorServerBusy with BackOffMilliseconds, Graph 429/503 with
Retry-After, IMAP [UNAVAILABLE]/[LIMIT]), no request of any kind (poll, after-filing action,
send) may reach it before the time it named. One row per mailbox in table Mailboxes (partition
`backoff`, row key: the mailbox name) holds that time; every stage reads it before it calls the
server and re-schedules its work (a delayed queue message) instead of sleeping.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .stores import MAILBOXES, Stores

BACKOFF_PARTITION = "backoff"
MAX_BACKOFF = timedelta(hours=1)  # a server's number is trusted up to this (hostile or broken)


def note_backoff(
    stores: Stores, mailbox: str, now: datetime, seconds: float, reason: str
) -> datetime:
    """Record that `mailbox`'s server asked for `seconds` of quiet from `now`; returns the end.
    A later end already recorded is kept (two workers told different things: the longer wins)."""
    until = now + min(timedelta(seconds=max(seconds, 0.0)), MAX_BACKOFF)
    table = stores.table(MAILBOXES)
    current = backoff_until(stores, mailbox, now)
    if current is not None and current >= until:
        return current
    table.upsert(
        {
            "PartitionKey": BACKOFF_PARTITION,
            "RowKey": mailbox,
            "Until": until,
            "Reason": reason[:500],
            "NotedAt": now,
        }
    )
    return until


def backoff_until(stores: Stores, mailbox: str, now: datetime) -> datetime | None:
    """The end of `mailbox`'s back-off if it is still running at `now`, else None."""
    row = stores.table(MAILBOXES).get(BACKOFF_PARTITION, mailbox)
    until = row.get("Until") if row else None
    if isinstance(until, datetime) and until > now:
        return until
    return None


def seconds_left(stores: Stores, mailbox: str, now: datetime) -> int:
    """Whole seconds until `mailbox` may be called again (0: now)."""
    until = backoff_until(stores, mailbox, now)
    if until is None:
        return 0
    return max(1, int((until - now).total_seconds() + 0.999))
