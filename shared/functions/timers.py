"""Timers: poll the mailboxes that are read by polling, and apply retention once a day."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

from ..store.names import POLLS
from .stage import Stage, stage, timer

if TYPE_CHECKING:
    from ..services.context import AppContext

bp = func.Blueprint()
log = logging.getLogger(__name__)
POLL_SCHEDULE = "0 */1 * * * *"  # NCRONTAB with seconds: every minute


@timer(bp, schedule=POLL_SCHEDULE)
def poll_mailboxes(ctx: AppContext) -> None:
    """Fan out: one `polls` message per mailbox that is due; re-send lost mailbox actions."""
    from ..stages.polls import schedule_polls

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


@timer(bp, schedule=RETENTION_SCHEDULE)
def apply_retention(ctx: AppContext) -> None:
    """Delete handled mail whose mailbox keeps it only `delete_after_days`, rate-limit slot
    rows no claim reads any more, and (once) fill the claims older index rows lack."""
    from ..services.retention import fill_message_claims, prune_rate_limit_slots, run_retention

    summary = run_retention(ctx, datetime.now(UTC))
    log.info("retention: %s", summary)
    prune_rate_limit_slots(ctx, datetime.now(UTC))
    fill_message_claims(ctx)  # a no-op (one read) once done


TELEMETRY_SCHEDULE = "0 */5 * * * *"  # every five minutes


@timer(bp, schedule=TELEMETRY_SCHEDULE)
def health_snapshot(ctx: AppContext) -> None:
    """The health report as metrics (what the alerts read) and one log line."""
    from ..services.health import expiry_hours, health_report
    from ..telemetry import record_snapshot

    now = datetime.now(UTC)
    report = health_report(ctx, now)
    record_snapshot(report, expiry_hours(report, now))
    failing = [n for n, m in report["mailboxes"].items() if m["status"] == "failing"]
    log.info("health: status=%s failing=%s", report["status"], ",".join(failing) or "-")
