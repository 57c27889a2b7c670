"""Timers: poll the mailboxes that are read by polling, and apply retention once a day."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from ..pipeline.context import get_context
from ..pipeline.poll import poll_all
from ..pipeline.retention import run_retention

bp = func.Blueprint()
log = logging.getLogger(__name__)
POLL_SCHEDULE = "0 */1 * * * *"  # NCRONTAB with seconds: every minute
MAX_PER_POLL = 500  # back-pressure: a huge backfill is spread over several polls


@bp.timer_trigger(schedule=POLL_SCHEDULE, arg_name="timer", run_on_startup=False)
def poll_mailboxes(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("poll: timer is past due; polling now")
    outcome = poll_all(get_context(), datetime.now(UTC), limit_per_mailbox=MAX_PER_POLL)
    log.info("poll: %s", outcome)


RETENTION_SCHEDULE = "0 15 3 * * *"  # daily at 03:15 UTC


@bp.timer_trigger(schedule=RETENTION_SCHEDULE, arg_name="timer", run_on_startup=False)
def apply_retention(timer: func.TimerRequest) -> None:
    """Delete handled mail whose mailbox keeps it only `delete_after_days`."""
    if timer.past_due:
        log.info("retention: timer is past due; running now")
    summary = run_retention(get_context(), datetime.now(UTC))
    log.info("retention: %s", summary)
