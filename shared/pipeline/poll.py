"""The polling cycle: ingest every enabled mailbox, each on its own, and record how it went."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from ..core.config import GraphMailbox
from ..sources.graph.state import SUBSCRIPTIONS
from ..store.stores import GRAPH_FETCH, GRAPH_STATE, MAILBOXES
from .context import AppContext
from .ingest import IngestSummary, ingest_mailbox

log = logging.getLogger(__name__)
STATUS_PARTITION = "status"


def poll_all(
    ctx: AppContext, now: datetime, limit_per_mailbox: int | None = None
) -> dict[str, str]:
    """Poll every enabled mailbox; one failing mailbox never stops the others."""
    outcome: dict[str, str] = {}
    statuses: dict[str, dict[str, Any]] | None = None
    for mailbox in ctx.config.mailboxes:
        if not mailbox.enabled:
            outcome[mailbox.name] = "disabled"
            continue
        if isinstance(mailbox, GraphMailbox) and not mailbox.polling_only:
            if statuses is None:
                statuses = {
                    e["RowKey"]: e for e in ctx.stores.table(MAILBOXES).partition(STATUS_PARTITION)
                }
            if not _graph_sync_due(ctx, mailbox.name, statuses.get(mailbox.name), now):
                outcome[mailbox.name] = "notifications"
                continue
        try:
            summary = ingest_mailbox(
                ctx.stores, mailbox.name, ctx.source(mailbox.name), now=now, limit=limit_per_mailbox
            )
        except Exception as exc:
            log.exception("poll: mailbox=%s failed", mailbox.name)
            record_status(
                ctx, mailbox.name, mailbox.kind, now, error=f"{type(exc).__name__}: {exc}"
            )
            outcome[mailbox.name] = "failed"
            continue
        record_status(ctx, mailbox.name, mailbox.kind, now, summary=summary)
        if isinstance(mailbox, GraphMailbox):
            if summary.complete:  # else the next poll goes on where this one stopped
                _resync_done(ctx, mailbox.name)
            # Mail already ingested that delta lists again changed (moved, flagged): the
            # fetch stage handles it as it handles an `updated` notification.
            for item_id in summary.changed:
                ctx.stores.queues.send_bytes(
                    GRAPH_FETCH,
                    json.dumps(
                        {
                            "v": 1,
                            "mailbox": mailbox.name,
                            "kind": "message",
                            "id": item_id,
                            "change": "updated",
                        }
                    ).encode(),
                )
        outcome[mailbox.name] = f"queued {summary.queued}"
    return outcome


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


def _resync_done(ctx: AppContext, name: str) -> None:
    ctx.stores.table(GRAPH_STATE).upsert(
        {"PartitionKey": name, "RowKey": "resync", "Requested": False}
    )


def record_status(
    ctx: AppContext,
    name: str,
    kind: str,
    now: datetime,
    *,
    summary: IngestSummary | None = None,
    error: str | None = None,
) -> None:
    table = ctx.stores.table(MAILBOXES)
    previous = table.get(STATUS_PARTITION, name) or {}
    entity: dict[str, Any] = {
        "PartitionKey": STATUS_PARTITION,
        "RowKey": name,
        "Kind": kind,
        "LastPoll": now,
    }
    if error is None and summary is not None:
        entity.update(
            LastSuccess=now,
            ConsecutiveFailures=0,
            LastError="",
            LastQueued=summary.queued,
            LastFailedItems=len(summary.failed),
        )
    else:
        entity.update(
            ConsecutiveFailures=int(previous.get("ConsecutiveFailures", 0)) + 1,
            LastError=(error or "")[:2000],
            LastErrorAt=now,
        )
    table.upsert(entity)


def mailbox_status(ctx: AppContext) -> dict[str, dict[str, Any]]:
    stored = {e["RowKey"]: e for e in ctx.stores.table(MAILBOXES).partition(STATUS_PARTITION)}
    out: dict[str, dict[str, Any]] = {}
    for mailbox in ctx.config.mailboxes:
        entry = stored.get(mailbox.name, {})
        failures = int(entry.get("ConsecutiveFailures", 0))
        state = (
            "disabled"
            if not mailbox.enabled
            else ("failing" if failures else ("ok" if entry.get("LastSuccess") else "pending"))
        )
        out[mailbox.name] = {
            "kind": mailbox.kind,
            "status": state,
            "last_poll": _iso(entry.get("LastPoll")),
            "last_success": _iso(entry.get("LastSuccess")),
            "consecutive_failures": failures,
            "last_error": entry.get("LastError") or None,
        }
        if isinstance(mailbox, GraphMailbox) and mailbox.enabled and not mailbox.polling_only:
            subs = {
                row["RowKey"].partition("~")[2]: {
                    "status": row.get("Status"),
                    "expires": _iso(row.get("Expires")),
                    "last_error": row.get("LastError") or None,
                }
                for row in ctx.stores.table(GRAPH_STATE).partition(
                    SUBSCRIPTIONS, row_from=f"{mailbox.name}~", row_before=f"{mailbox.name}~~"
                )
            }
            out[mailbox.name]["subscriptions"] = subs
            if any(s["status"] != "active" for s in subs.values()):
                out[mailbox.name]["status"] = "failing"
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None
