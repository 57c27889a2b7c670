"""Timers: poll the mailboxes that are read by polling, and apply retention once a day."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

from ..store.names import POLLS
from .loading import load
from .stage import Stage, stage

if TYPE_CHECKING:
    pass

bp = func.Blueprint()
log = logging.getLogger(__name__)
POLL_SCHEDULE = "0 */1 * * * *"  # NCRONTAB with seconds: every minute


@bp.timer_trigger(schedule=POLL_SCHEDULE, arg_name="timer", run_on_startup=False)
def poll_mailboxes(timer: func.TimerRequest) -> None:
    """Fan out: one `polls` message per mailbox that is due; re-send lost mailbox actions."""
    load()
    from ..services.context import get_context
    from ..stages.polls import schedule_polls

    if timer.past_due:
        log.info("poll: timer is past due; polling now")
    ctx = get_context()
    if os.environ.get("WEBSITE_INSTANCE_ID"):  # set by App Service on every instance
        from ..services.serving import AZURE_TTL, claim

        # In Azure the app always serves its storage (a deployment replaces the config): its
        # claim keeps a local process with another configuration from reading the queues.
        claim(
            ctx.stores,
            ctx.config,
            str(ctx.settings.config_path),
            datetime.now(UTC),
            kind="azure",
            ttl=AZURE_TTL,
            force=True,
        )
    outcome = schedule_polls(ctx, datetime.now(UTC))
    log.info("poll: %s", outcome)
    from ..stages.mailbox_actions import sweep

    # Pending mailbox actions whose message was lost (a crash after filing) are sent again.
    sweep(ctx, datetime.now(UTC))


@stage(bp, queue=POLLS)
def poll_mailbox() -> Stage:
    """One mailbox's poll, under its lease; its failure is recorded, not retried here (the
    next timer tick schedules it again)."""
    from ..stages import polls

    return polls


RETENTION_SCHEDULE = "0 15 3 * * *"  # daily at 03:15 UTC


@bp.timer_trigger(schedule=RETENTION_SCHEDULE, arg_name="timer", run_on_startup=False)
def apply_retention(timer: func.TimerRequest) -> None:
    """Delete handled mail whose mailbox keeps it only `delete_after_days`, and rate-limit
    slot rows no claim reads any more."""
    load()
    from ..services.context import get_context
    from ..services.retention import prune_rate_limit_slots, run_retention

    if timer.past_due:
        log.info("retention: timer is past due; running now")
    summary = run_retention(get_context(), datetime.now(UTC))
    log.info("retention: %s", summary)
    prune_rate_limit_slots(get_context(), datetime.now(UTC))


TELEMETRY_SCHEDULE = "0 */5 * * * *"  # every five minutes


@bp.timer_trigger(schedule=TELEMETRY_SCHEDULE, arg_name="timer", run_on_startup=False)
def health_snapshot(timer: func.TimerRequest) -> None:  # noqa: ARG001
    """The health report as metrics (what the alerts read) and one log line."""
    load()
    from ..services.context import get_context
    from ..services.health import expiry_hours, health_report
    from ..telemetry import record_snapshot

    now = datetime.now(UTC)
    report = health_report(get_context(), now)
    record_snapshot(report, expiry_hours(report, now))
    failing = [n for n, m in report["mailboxes"].items() if m["status"] == "failing"]
    log.info("health: status=%s failing=%s", report["status"], ",".join(failing) or "-")
