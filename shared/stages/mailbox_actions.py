"""The after-filing mailbox actions as their own step: once per mail and mailbox, retried,
never dropped, never against the user.

Filing writes a pending-actions row (store/pending_actions.py) and sends a `mailbox-actions`
message naming it; this stage runs the actions through the mailbox's source and marks the row
done. The row is the truth: a crash between the row and the send is caught up by the filing's
retry or by the sweep on the poll timer, and a row once done is never run again, so a later
sighting of the mail (the user moved it back, a duplicate notification, a redelivered plan)
leaves it where the user put it.

Retry policy: a server asking for quiet (SourceBusy, GraphThrottled) records the mailbox's
back-off and the step runs again when it ends; a transient failure (SourceUnavailable, a lost
connection, a timeout) runs again after 30 s, doubling up to an hour. Either is a new delayed
message, never a sleep. Any other error is retried by the queue (host.json maxDequeueCount).
After MAX_ATTEMPTS runs, or the queue's last try, the message goes to `mailbox-actions-poison`
with the reason and the row says failed (counted by `mailfiler status` and the health
endpoint); `mailfiler poison replay mailbox-actions` runs it again after a fix. Before any call
the stage reads the mailbox's back-off and re-schedules instead of calling.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ..core.contracts import ActionsJob
from ..core.logtext import log_key
from ..services.actions import STALE, act, resend_actions, send_actions
from ..services.context import AppContext
from ..services.poison import send_to_poison
from ..services.server_busy import note_busy
from ..sources.base import SourceUnavailable
from ..store import pending_actions as pending
from ..store.backoff import seconds_left
from ..store.errors import ContractError
from ..store.queues import decode
from ..store.stores import MAILBOX_ACTIONS, Stores
from ..store.tables import Entity

log = logging.getLogger(__name__)
STAGE = "actions"
MAX_ATTEMPTS = 8  # runs of one mail's actions before they are given up (poison, row failed)
FIRST_RETRY = 30  # seconds after a transient failure; doubles each time
MAX_RETRY = 3600
CLAIM = timedelta(minutes=5)  # a run takes seconds; a worker that died frees the row after this


def handle_actions(ctx: AppContext, body: bytes, now: datetime) -> str:
    """Run one mail's actions in one mailbox, if this message is the one that may."""
    job = decode(body, ActionsJob)
    stores = ctx.stores
    where = f"mailbox={job.mailbox} {log_key(job.message_key)}"
    row = pending.get(stores, job.mailbox, job.message_key)
    if row is None:
        return f"{where}: no such pending actions"
    if row.get("Job") != job.job:
        return f"{where}: superseded by a later message"
    if row.get("State") == pending.DONE:
        return f"{where}: done already"
    if row.get("State") == pending.FAILED_STATE:
        # Only the poison message carries a failed row's job: an operator replayed it.
        if not pending.reopen(stores, row, due=now, now=now):
            return f"{where}: changed meanwhile"
        row = pending.get(stores, job.mailbox, job.message_key)
        if row is None:
            return f"{where}: gone"
        log.info("actions: %s replayed: attempts start again", where)
    if pending.running(row, now):
        return f"{where}: another worker runs it"
    mailbox = ctx.config.mailbox(job.mailbox)
    if mailbox is None or not mailbox.enabled:
        why = "is not configured" if mailbox is None else "is disabled"
        return _give_up(stores, row, body, f"mailbox {job.mailbox} {why}", now)
    wait = seconds_left(stores, job.mailbox, now)
    if wait:
        # Nothing reaches a server inside its back-off: the run moves to its end.
        return _later(stores, row, wait, now, error=None, where=where, why="backing off")
    claimed = pending.claim(stores, row, until=now + CLAIM)
    if claimed is None:
        return f"{where}: claimed by another worker"
    actions = pending.actions_of(claimed)
    try:
        results = act(
            stores,
            ctx.source(job.mailbox),
            mailbox=job.mailbox,
            source_id=str(claimed.get("SourceId", "")),
            message_key=job.message_key,
            record=pending.record_of(claimed),
            actions=actions,
            why=f"after filing {log_key(job.message_key).removeprefix('message-id=')[:200]}",
            now=now,
        )
    except Exception as exc:
        return _failed(stores, claimed, body, exc, now, where)
    detail = ", ".join(f"{r.action.action}: {r.detail}" for r in results)
    if not pending.mark_done(stores, claimed, detail, now):
        log.warning("actions: %s ran, but the row changed meanwhile", where)
    log.info("actions: %s done (%s)", where, detail[:200])
    return f"{where}: done"


def _failed(
    stores: Stores, row: Entity, body: bytes, exc: Exception, now: datetime, where: str
) -> str:
    error = f"{type(exc).__name__}: {exc}"
    attempts = int(row.get("Attempts") or 0)
    busy = note_busy(stores, str(row["PartitionKey"]), exc, now)
    if attempts >= MAX_ATTEMPTS:
        return _give_up(stores, row, body, f"failed {attempts} times; last error: {error}", now)
    if busy is not None:
        return _later(stores, row, busy, now, error=error, where=where, why="server busy")
    if isinstance(exc, SourceUnavailable | OSError):  # ConnectionError, TimeoutError included
        delay = min(FIRST_RETRY * 2 ** (attempts - 1), MAX_RETRY)
        return _later(stores, row, delay, now, error=error, where=where, why="transient failure")
    # Not known to pass by itself: the queue retries this very message (its last try poisons
    # it, and `on_poison` marks the row failed).
    log.warning("actions: %s attempt %d failed: %s", where, attempts, error)
    pending.note_error(stores, row, error, now)
    raise exc


def _later(
    stores: Stores,
    row: Entity,
    seconds: int,
    now: datetime,
    *,
    error: str | None,
    where: str,
    why: str,
) -> str:
    job = pending.new_job()
    due = now + timedelta(seconds=seconds)
    if not pending.reschedule(stores, row, job=job, due=due, now=now, error=error):
        return f"{where}: changed meanwhile"
    send_actions(stores, str(row["PartitionKey"]), str(row["MessageKey"]), job, seconds)
    log.info("actions: %s %s; again in %d s", where, why, seconds)
    return f"{where}: {why}; again in {seconds} s"


def _give_up(stores: Stores, row: Entity, body: bytes, reason: str, now: datetime) -> str:
    """Failed for good: the message to the poison queue (replayable), the row failed."""
    send_to_poison(
        stores,
        queue=MAILBOX_ACTIONS,
        stage=STAGE,
        body=body,
        reason=reason,
        dequeue_count=int(row.get("Attempts") or 0),
        now=now,
    )
    pending.mark_failed(stores, row, reason, now)
    where = f"mailbox={row['PartitionKey']} {log_key(str(row['MessageKey']))}"
    log.error("actions: %s failed: %s", where, reason)
    return f"failed: {reason}"


def on_poison(ctx: AppContext, body: bytes, reason: str, now: datetime) -> None:
    """The queue gave the message up (its last try, or a malformed message): its row, if it
    still belongs to this message, says failed with the reason."""
    try:
        job = decode(body, ActionsJob)
    except ContractError:
        return  # malformed: it names no row
    row = pending.get(ctx.stores, job.mailbox, job.message_key)
    if row is not None and row.get("Job") == job.job:
        pending.mark_failed(ctx.stores, row, reason, now)


def sweep(ctx: AppContext, now: datetime) -> int:
    """Send again the pending actions whose message was lost (a crash between the row and the
    send, a worker that died mid-run). On the poll timer; reads only the open rows."""
    sent = 0
    for mailbox in ctx.config.mailboxes:
        for key in list(pending.open_rows(ctx.stores, mailbox.name, now - STALE)):
            row = pending.get(ctx.stores, mailbox.name, key)
            if row is None or not pending.stale(row, now, STALE):
                continue
            if resend_actions(ctx.stores, row, now, why="sweep") == "re-sent":
                sent += 1
    if sent:
        log.warning("actions: %d pending actions re-sent by the sweep", sent)
    return sent


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `mailbox-actions` (called by its trigger: functions/stage.py)."""
    return handle_actions(ctx, body, now)
