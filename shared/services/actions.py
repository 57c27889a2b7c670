"""Acting on mail in its mailbox (after filing, for retention, on failure), and keeping a note.

Every action goes through the source adapter; what it did (or only recorded, for local files)
lands in `MailboxActions` and in the audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from ..core.contracts import ActionsJob, FilingPlan, MailboxAction, RecordRef
from ..core.logtext import log_key
from ..sources.base import ActionResult, MailboxSource
from ..store import action_log
from ..store import pending_actions as pending
from ..store.backoff import seconds_left
from ..store.keys import sighting_row as sighting_row  # retention.py's import of it
from ..store.stores import MAILBOX_ACTIONS, Stores
from ..store.tables import Entity
from .audit import Actor, audit

log = logging.getLogger(__name__)

MAILFILER = Actor(name="mailfiler", source="pipeline")


def act(
    stores: Stores,
    source: MailboxSource,
    *,
    mailbox: str,
    source_id: str,
    message_key: str,
    record: RecordRef | None,
    actions: Sequence[MailboxAction],
    why: str,
    now: datetime,
) -> list[ActionResult]:
    """Carry out `actions` on one mail and note the outcome. Errors of the source propagate."""
    results = source.apply(source_id, actions)
    done = ", ".join(f"{r.action.action}{'' if r.done else ' (recorded)'}" for r in results)
    audit(stores, MAILFILER, "mailbox_action", record, f"{mailbox}: {done} {why}", now)
    done_list = [(r.action, r.done, r.detail) for r in results]
    action_log.note(stores, message_key, mailbox, source_id, done_list, now)
    return results


def request_actions(stores: Stores, plan: FilingPlan, now: datetime) -> str:
    """Filing's part, after the mail is filed: the pending row, then the message that runs it.
    Once per mail and mailbox: a row already there (done, failed or on its way) is left as it
    is, so a later sighting never acts again. A row whose message was lost is sent again."""
    if not plan.mailbox_actions:
        return "no actions"
    where = f"mailbox={plan.mailbox} {log_key(plan.message_key)}"
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
        send_actions(stores, plan.mailbox, plan.message_key, job, wait)
        log.info("actions: %s pending (%s)", where, _names(plan))
        return "pending"
    row = pending.get(stores, plan.mailbox, plan.message_key)
    if row is not None and pending.stale(row, now, STALE):
        return resend_actions(stores, row, now, why="filing again")
    state = row.get("State") if row else "gone"
    log.info("actions: %s already %s: not planned again", where, state)
    return f"already {state}"


STALE = timedelta(minutes=5)  # a pending row whose message is this late is re-sent (the sweep)


def resend_actions(stores: Stores, row: Entity, now: datetime, *, why: str) -> str:
    mailbox = str(row["PartitionKey"])
    wait = seconds_left(stores, mailbox, now)
    job = pending.new_job()
    if not pending.reschedule(
        stores, row, job=job, due=now + timedelta(seconds=wait), now=now, error=None
    ):
        return "changed meanwhile"
    send_actions(stores, mailbox, str(row["MessageKey"]), job, wait)
    log.warning(
        "actions: mailbox=%s %s re-sent (%s)", mailbox, log_key(str(row["MessageKey"])), why
    )
    return "re-sent"


def send_actions(stores: Stores, mailbox: str, message_key: str, job: str, delay: int) -> None:
    stores.queues.send(
        MAILBOX_ACTIONS,
        ActionsJob(mailbox=mailbox, message_key=message_key, job=job),
        delay_seconds=delay or None,
    )


def _names(plan: FilingPlan) -> str:
    return ", ".join(a.action for a in plan.mailbox_actions)
