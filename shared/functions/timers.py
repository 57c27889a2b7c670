"""Timers: poll every mailbox that is read by polling (local folders now; IMAP and EWS later)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from ..pipeline.context import get_context
from ..pipeline.poll import poll_all

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
