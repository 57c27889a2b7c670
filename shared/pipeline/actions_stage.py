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

from ..core.contracts import ActionsJob, FilingPlan
from ..sources.base import SourceUnavailable
from ..store import pending_actions as pending
from ..store.backoff import seconds_left
from ..store.errors import ContractError
from ..store.queues import decode
from ..store.stores import MAILBOX_ACTIONS, Stores
from ..store.tables import Entity
from .context import AppContext
from .mailbox_actions import act
from .poison import send_to_poison
from .server_busy import note_busy

log = logging.getLogger(__name__)
STAGE = "actions"
MAX_ATTEMPTS = 8  # runs of one mail's actions before they are given up (poison, row failed)
FIRST_RETRY = 30  # seconds after a transient failure; doubles each time
MAX_RETRY = 3600
CLAIM = timedelta(minutes=5)  # a run takes seconds; a worker that died frees the row after this
STALE = timedelta(minutes=5)  # a pending row whose message is this late is re-sent (the sweep)


def request_actions(stores: Stores, plan: FilingPlan, now: datetime) -> str:
    """Filing's part, after the mail is filed: the pending row, then the message that runs it.
    Once per mail and mailbox: a row already there (done, failed or on its way) is left as it
    is, so a later sighting never acts again. A row whose message was lost is sent again."""
    if not plan.mailbox_actions:
        return "no actions"
    where = f"mailbox={plan.mailbox} key={plan.message_key[:40]}"
    wait = seconds_left(stores, plan.mailbox, now)
    job = pending.new_job()
    due = now + timedelta(seconds=wait)
    if pending.create(
        stores,
        mailbox=plan.mailbox,
        message_key=plan.message_key,
        source_id=plan.source_id,
        actions=plan.mailbox_actions,
        record=plan.record,
        job=job,
        due=due,
        now=now,
    ):
        _send(stores, plan.mailbox, plan.message_key, job, wait)
        log.info("actions: %s pending (%s)", where, _names(plan))
        return "pending"
    row = pending.get(stores, plan.mailbox, plan.message_key)
    if row is not None and pending.stale(row, now, STALE):
        return _resend(stores, row, now, why="filing again")
    state = row.get("State") if row else "gone"
    log.info("actions: %s already %s: not planned again", where, state)
    return f"already {state}"


def handle_actions(ctx: AppContext, body: bytes, now: datetime) -> str:
    """Run one mail's actions in one mailbox, if this message is the one that may."""
    job = decode(body, ActionsJob)
    stores = ctx.stores
    where = f"mailbox={job.mailbox} key={job.message_key[:40]}"
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
            why=f"after filing {job.message_key[:80]}",
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
    # it, and `actions_poisoned` marks the row failed).
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
    _send(stores, str(row["PartitionKey"]), str(row["MessageKey"]), job, seconds)
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
    where = f"mailbox={row['PartitionKey']} key={str(row['MessageKey'])[:40]}"
    log.error("actions: %s failed: %s", where, reason)
    return f"failed: {reason}"


def actions_poisoned(ctx: AppContext, body: bytes, reason: str, now: datetime) -> None:
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
            if _resend(ctx.stores, row, now, why="sweep") == "re-sent":
                sent += 1
    if sent:
        log.warning("actions: %d pending actions re-sent by the sweep", sent)
    return sent


def _resend(stores: Stores, row: Entity, now: datetime, *, why: str) -> str:
    mailbox = str(row["PartitionKey"])
    wait = seconds_left(stores, mailbox, now)
    job = pending.new_job()
    if not pending.reschedule(
        stores, row, job=job, due=now + timedelta(seconds=wait), now=now, error=None
    ):
        return "changed meanwhile"
    _send(stores, mailbox, str(row["MessageKey"]), job, wait)
    log.warning("actions: mailbox=%s key=%s re-sent (%s)", mailbox, row["MessageKey"][:40], why)
    return "re-sent"


def _send(stores: Stores, mailbox: str, message_key: str, job: str, delay: int) -> None:
    stores.queues.send(
        MAILBOX_ACTIONS,
        ActionsJob(mailbox=mailbox, message_key=message_key, job=job),
        delay_seconds=delay or None,
    )


def _names(plan: FilingPlan) -> str:
    return ", ".join(a.action for a in plan.mailbox_actions)
