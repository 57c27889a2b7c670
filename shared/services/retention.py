"""Retention: delete handled mail from its mailbox N days later (`after_filing.delete_after_days`).

Filing notes each handled mail under the day it falls due (table `Retention`, PK the due day,
RK the mail's sighting key); a daily timer deletes what is due, through the source adapter.
Only mail that was filed, dropped or rejected is noted, and only after that was committed, so
nothing unhandled is ever deleted; the raw mail stays in Blob Storage. A mailbox whose
retention was switched off since keeps its mail: its notes are dropped unacted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..core.config import Config
from ..core.contracts import FilingPlan, MailboxAction
from ..store import retention
from ..store.backoff import seconds_left
from ..store.claims_fill import fill_claims
from ..store.stores import RETENTION, Stores
from .actions import act, sighting_row
from .context import AppContext
from .server_busy import note_busy

log = logging.getLogger(__name__)
DELETE = (MailboxAction(action="delete"),)


def schedule_deletion(stores: Stores, config: Config, plan: FilingPlan, now: datetime) -> None:
    mailbox = config.mailbox(plan.mailbox)
    days = mailbox.after_filing.delete_after_days if mailbox else None
    if not days:
        return
    retention.note(
        stores.table(RETENTION),
        now + timedelta(days=days),
        sighting_row(plan.mailbox, plan.source_id),
        mailbox=plan.mailbox,
        source_id=plan.source_id,
        message_key=plan.message_key,
        record=plan.record,
        now=now,
    )


@dataclass
class RetentionSummary:
    deleted: int = 0
    recorded: int = 0  # sources that never delete (local files) only note the decision
    skipped: int = 0  # retention switched off, or the mailbox removed, since
    failed: list[tuple[str, str]] = field(default_factory=list)


def run_retention(ctx: AppContext, now: datetime) -> RetentionSummary:
    """Delete every mail that is due; a failing mailbox keeps its notes for the next run."""
    summary = RetentionSummary()
    table = ctx.stores.table(RETENTION)
    due = retention.due(table, now)
    broken: set[str] = set()
    for row in due:
        name = row["Mailbox"]
        mailbox = ctx.config.mailbox(name)
        if mailbox is None or not mailbox.after_filing.delete_after_days:
            summary.skipped += 1
            retention.forget(table, row)
            continue
        if name in broken:
            continue
        if seconds_left(ctx.stores, name, now):
            # The server asked for quiet: its mail waits for the next run, untouched.
            summary.failed.append((name, "the server asked for quiet (back-off)"))
            broken.add(name)
            continue
        record = retention.record_of(row)
        try:
            (result,) = act(
                ctx.stores,
                ctx.source(name),
                mailbox=name,
                source_id=row["SourceId"],
                message_key=row["MessageKey"],
                record=record,
                actions=DELETE,
                why=f"retention ({mailbox.after_filing.delete_after_days} days)",
                now=now,
            )
        except Exception as exc:
            # One broken mailbox must not stop the others; its mail waits for the next run.
            note_busy(ctx.stores, name, exc, now)
            log.warning("retention: mailbox=%s failed: %s", name, exc)
            summary.failed.append((name, f"{type(exc).__name__}: {exc}"))
            broken.add(name)
            continue
        if result.done:
            summary.deleted += 1
        else:
            summary.recorded += 1
        retention.forget(table, row)
    log.info(
        "retention: deleted=%d recorded=%d skipped=%d failed mailboxes=%d",
        summary.deleted,
        summary.recorded,
        summary.skipped,
        len(summary.failed),
    )
    return summary


def prune_rate_limit_slots(ctx: AppContext, now: datetime) -> int:
    """The daily sweep's second part: per-sender rate-limit slot rows no claim can read any
    more (table Contacts, `shared/store/sender_slots.py`)."""
    from ..store.sender_slots import prune_slots
    from ..store.stores import CONTACTS

    window = timedelta(minutes=ctx.config.rate_limit.window_minutes)
    deleted = prune_slots(ctx.stores.table(CONTACTS), now, window)
    if deleted:
        log.info("retention: pruned %d rate-limit slot rows", deleted)
    return deleted


def fill_message_claims(ctx: AppContext) -> int:
    """Once per deployment: the claims missing beside message index rows filed before every
    index row had one (store/claims_fill.py); after it, the map stage skips the index read."""
    return fill_claims(ctx.stores)
