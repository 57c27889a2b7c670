"""File: carry out a filing plan in Table Storage, then act on the mailbox.

Idempotent under redelivery: every write has a key derived from the plan, and the message index
entry (what makes a message count as filed) is written last. Mailbox actions run only after the
filing is committed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core.config import Config
from ..core.contracts import FilingPlan, RecordRef
from ..sources.base import MailboxSource
from ..store.errors import ContractError
from ..store.queues import decode
from ..store.stores import ACTIONS, COUNTERS, MESSAGES, RECORDS, TIMELINE, Stores

log = logging.getLogger(__name__)
MAX_COUNTER_ATTEMPTS = 20


def timeline_row(plan: FilingPlan) -> str:
    stamp = plan.entry.date.strftime("%Y%m%dT%H%M%S") if plan.entry and plan.entry.date else "0"
    return f"{stamp}-{hashlib.sha256(plan.message_key.encode()).hexdigest()[:24]}"


def sighting_row(mailbox: str, source_id: str) -> str:
    return "s-" + hashlib.sha256(f"{mailbox}\x00{source_id}".encode()).hexdigest()[:32]


def next_number(stores: Stores, record_type: str) -> int:
    """The next human-readable number of a record type; ETag-guarded, never handed out twice."""
    table = stores.table(COUNTERS)
    for _ in range(MAX_COUNTER_ATTEMPTS):
        current = table.get(record_type, "number")
        if current is None:
            if (
                table.insert({"PartitionKey": record_type, "RowKey": "number", "Value": 1})
                is not None
            ):
                return 1
            continue
        value = int(current["Value"]) + 1
        if table.update_if_unchanged(
            {"PartitionKey": record_type, "RowKey": "number", "Value": value}, current["_etag"]
        ):
            return value
    raise RuntimeError(f"counter {record_type}: too much contention, will retry")


def ensure_record(stores: Stores, config: Config, plan: FilingPlan, now: datetime) -> None:
    """Create the plan's record once, then give it the next number of its type.

    The insert decides which of several concurrent plans creates the record (a conversation's
    first mails often arrive together); only that one draws a number. A record its creator left
    without a number (a crash) gets one when that plan is redelivered, ETag-guarded.
    """
    assert plan.record is not None
    records = stores.table(RECORDS)
    entity: dict[str, object] = {
        "PartitionKey": plan.record.type,
        "RowKey": plan.record.key,
        "Title": (plan.title or "")[:1000],
        "Status": "new",
        "CreatedAt": now,
        "CreatedFrom": plan.message_key[:400],
        "Mailbox": plan.mailbox,
    }
    for name, value in plan.fields.items():
        entity[f"F_{name}"] = value
    etag = records.insert(entity)
    if etag is None:
        if plan.root:
            # A reply mapped first created the record; the conversation's first mail names it.
            keep = ("CreatedAt", "CreatedFrom", "Status")
            records.upsert({k: v for k, v in entity.items() if k not in keep})
        existing = records.get(plan.record.type, plan.record.key)
        # Only the plan that created the record numbers it (again, after a crash): another
        # plan of the same conversation would race the creator and waste a number.
        if existing is None or "Number" in existing:
            return
        if existing.get("CreatedFrom") != plan.message_key[:400]:
            return
        etag = existing["_etag"]
    record_type = config.record_type(plan.record.type)
    prefix = record_type.prefix if record_type else plan.record.type.upper()
    number = next_number(stores, plan.record.type)
    numbered = {
        "PartitionKey": plan.record.type,
        "RowKey": plan.record.key,
        "Number": number,
        "DisplayId": f"{prefix}-{number}",
    }
    for _ in range(MAX_COUNTER_ATTEMPTS):
        if records.update_if_unchanged(numbered, etag):
            return
        current = records.get(plan.record.type, plan.record.key)
        if current is None or "Number" in current:
            log.info("file: record %s numbered elsewhere (%d unused)", plan.record.key, number)
            return
        etag = current["_etag"]  # changed by a merge that set no number: try again
    raise RuntimeError(f"record {plan.record.key}: could not store its number, will retry")


def file_plan(
    stores: Stores,
    config: Config,
    body: bytes,
    *,
    now: datetime,
    source_for: Callable[[str], MailboxSource],
) -> FilingPlan:
    plan = decode(body, FilingPlan)
    messages = stores.table(MESSAGES)
    if plan.action == "drop":
        messages.upsert(
            {
                "PartitionKey": plan.message_key,
                "RowKey": "drop",
                "Mailbox": plan.mailbox,
                "Reasons": "\n".join(plan.reasons)[:4000],
                "At": now,
            }
        )
        return plan
    if plan.record is None:
        raise ContractError(f"plan {plan.action} for {plan.message_key[:40]} names no record")
    sighting: dict[str, Any] = {
        "PartitionKey": plan.message_key,
        "RowKey": sighting_row(plan.mailbox, plan.source_id),
        "Mailbox": plan.mailbox,
        "SourceId": plan.source_id[:1000],
        "Folder": plan.folder,
        "Blob": plan.blob,
        "SeenAt": now,
    }
    if plan.action == "sighting":
        updates: list[dict[str, Any]] = [sighting]
        own = messages.get(plan.message_key, "msg")
        if own and (own["Mailbox"], own["SourceId"]) == (plan.mailbox, plan.source_id):
            updates.append(
                {"PartitionKey": plan.message_key, "RowKey": "msg", "Folder": plan.folder}
            )
        messages.upsert_batch(updates)
    else:
        if plan.entry is None:
            raise ContractError(f"plan {plan.action} for {plan.message_key[:40]} has no entry")
        if plan.action == "create":
            ensure_record(stores, config, plan, now)
        _write_timeline(stores, plan.record, plan)
        # Written last, in one transaction: from here on the message counts as filed.
        messages.upsert_batch(
            [
                {
                    "PartitionKey": plan.message_key,
                    "RowKey": "msg",
                    "RecordType": plan.record.type,
                    "RecordKey": plan.record.key,
                    "MessageId": (plan.entry.message_id or "")[:1000],
                    "Mailbox": plan.mailbox,
                    "SourceId": plan.source_id[:1000],
                    "Folder": plan.folder,
                    "Blob": plan.blob,
                    "FiledAt": now,
                    "Reasons": "\n".join(plan.reasons)[:4000],
                },
                sighting,
            ]
        )
    _act_on_mailbox(stores, plan, now, source_for)
    log.info(
        "file: mailbox=%s key=%s action=%s record=%s",
        plan.mailbox,
        plan.message_key[:40],
        plan.action,
        plan.record.key,
    )
    return plan


def _write_timeline(stores: Stores, record: RecordRef, plan: FilingPlan) -> None:
    assert plan.entry is not None
    entry = plan.entry
    stores.table(TIMELINE).upsert(
        {
            "PartitionKey": f"{record.type}-{record.key}",
            "RowKey": timeline_row(plan),
            "MessageKey": plan.message_key[:400],
            "Direction": entry.direction,
            "MessageId": (entry.message_id or "")[:1000],
            "Subject": entry.subject,
            "From": entry.from_,
            "To": ", ".join(entry.to)[:8000],
            "Cc": ", ".join(entry.cc)[:8000],
            "Date": entry.date,
            "Snippet": entry.snippet,
            "Attachments": "\n".join(
                f"{a.filename or ''}\t{a.content_type}\t{a.size}" for a in entry.attachments
            )[:8000],
            "Mailbox": plan.mailbox,
            "Folder": plan.folder,
            "Blob": plan.blob,
        },
        mode="replace",
    )


def _act_on_mailbox(
    stores: Stores, plan: FilingPlan, now: datetime, source_for: Callable[[str], MailboxSource]
) -> None:
    if not plan.mailbox_actions:
        return
    results = source_for(plan.mailbox).apply(plan.source_id, plan.mailbox_actions)
    stores.table(ACTIONS).upsert_batch(
        [
            {
                "PartitionKey": plan.message_key,
                "RowKey": f"{sighting_row(plan.mailbox, plan.source_id)}-{i}",
                "Mailbox": plan.mailbox,
                "Action": r.action.action,
                "Target": r.action.folder or r.action.category,
                "Done": r.done,
                "Detail": r.detail[:1000],
                "At": now,
            }
            for i, r in enumerate(results)
        ]
    )
