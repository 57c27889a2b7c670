"""File: carry out a filing plan in Table Storage, then act on the mailbox.

Idempotent under redelivery: every write has a key derived from the plan, and the message index
entry (what makes a message count as filed) is written last. Mailbox actions run only after the
filing is committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core.config import Config
from ..core.contracts import FilingPlan, RecordRef
from ..sources.base import MailboxSource
from ..store.errors import ContractError
from ..store.keys import activity_row, contact_row, conversation_row, sender_partition
from ..store.queues import decode
from ..store.stores import (
    ACTIONS,
    CONTACTS,
    CONVERSATIONS,
    COUNTERS,
    HELD,
    MESSAGES,
    NOTICES,
    NUMBERS,
    PARTICIPANTS,
    RECORDS,
    SENDERS,
    TIMELINE,
    Stores,
)
from . import events
from .audit import Actor, audit

log = logging.getLogger(__name__)
MAX_COUNTER_ATTEMPTS = 20
MAILFILER = Actor(name="mailfiler", source="pipeline")


def timeline_row(plan: FilingPlan) -> str:
    stamp = plan.entry.date.strftime("%Y%m%dT%H%M%S") if plan.entry and plan.entry.date else "0"
    return f"{stamp}-{hashlib.sha256(plan.message_key.encode()).hexdigest()[:24]}"


def sighting_row(mailbox: str, source_id: str) -> str:
    return "s-" + hashlib.sha256(f"{mailbox}\x00{source_id}".encode()).hexdigest()[:32]


def claim_number(stores: Stores, record_type: str, record_key: str) -> int:
    """The next human-readable number of a record type, never handed out twice.

    The claim is an insert into RecordNumbers (number -> record), which Table Storage makes
    unique: whoever inserts row n owns n. The counter is only a hint where to start, so it needs
    no ETag and concurrent creators cost one insert per collision, not a read-modify-write.
    The row is also the index that resolves subject tokens. A creator that crashed after its
    claim claims again when redelivered: the first number stays an alias of the same record,
    never another record's.
    """
    counters, numbers = stores.table(COUNTERS), stores.table(NUMBERS)
    hint = counters.get(record_type, "number")
    start = int(hint["Value"]) + 1 if hint else 1
    for _ in range(MAX_COUNTER_ATTEMPTS):
        number = _next_guess(stores, record_type, start)
        row = {"PartitionKey": record_type, "RowKey": str(number), "RecordKey": record_key}
        if numbers.insert(row) is not None:
            counters.upsert({"PartitionKey": record_type, "RowKey": "number", "Value": number})
            return number
        start = number + 1
    raise RuntimeError(f"numbers of {record_type}: too much contention, will retry")


def _next_guess(stores: Stores, record_type: str, start: int) -> int:
    """Workers sharing these Stores never try the same number: only other processes collide."""
    with stores.lock:
        guess = max(start, stores.number_guesses.get(record_type, 0) + 1)
        stores.number_guesses[record_type] = guess
        return guess


def ensure_record(
    stores: Stores, config: Config, plan: FilingPlan, now: datetime
) -> tuple[bool, str | None]:
    """Create the plan's record once, then give it the next number of its type.

    The insert decides which of several concurrent plans creates the record (a conversation's
    first mails often arrive together); only that one draws a number. A record its creator left
    without a number (a crash) gets one when that plan is redelivered, ETag-guarded. Returns
    whether this plan is the record's creator (also when redelivered), and its display id.
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
        "Contact": plan.sender,
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
        creator = existing is not None and existing.get("CreatedFrom") == plan.message_key[:400]
        if existing is None or "Number" in existing or not creator:
            return creator, existing.get("DisplayId") if existing else None
        etag = existing["_etag"]
    record_type = config.record_type(plan.record.type)
    prefix = record_type.prefix if record_type else plan.record.type.upper()
    number = claim_number(stores, plan.record.type, plan.record.key)
    numbered = {
        "PartitionKey": plan.record.type,
        "RowKey": plan.record.key,
        "Number": number,
        "DisplayId": f"{prefix}-{number}",
    }
    display_id = f"{prefix}-{number}"
    for _ in range(MAX_COUNTER_ATTEMPTS):
        if records.update_if_unchanged(numbered, etag):
            return True, display_id
        current = records.get(plan.record.type, plan.record.key)
        if current is None or "Number" in current:
            log.info("file: record %s numbered elsewhere (%d unused)", plan.record.key, number)
            return True, current.get("DisplayId") if current else None
        etag = current["_etag"]  # changed by a merge that set no number: try again
    raise RuntimeError(f"record {plan.record.key}: could not store its number, will retry")


def _message_row(plan: FilingPlan) -> str:
    assert plan.record is not None
    return "msg" if plan.primary else f"also-{plan.record.type}"


def _update_fields(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    assert plan.record is not None
    if not plan.fields and not plan.tags and not plan.status:
        return
    entity: dict[str, Any] = {
        "PartitionKey": plan.record.type,
        "RowKey": plan.record.key,
        "UpdatedAt": now,
    }
    entity.update({f"F_{name}": value for name, value in plan.fields.items()})
    if plan.tags:
        entity["Tags"] = ",".join(plan.tags)[:1000]
    if plan.status:
        entity["Status"] = plan.status
    stores.table(RECORDS).upsert(entity)


def _apply_contacts(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    contacts = stores.table(CONTACTS)
    for update in plan.contacts:
        row = contact_row(update.address)
        if update.kind == "guest":
            # insert, not upsert: a guest never overwrites a contact someone set up
            contacts.insert(
                {
                    "PartitionKey": "contact",
                    "RowKey": row,
                    "Address": update.address,
                    "Name": update.name[:200],
                    "Kind": "guest",
                    "Allowed": True,
                    "CreatedAt": now,
                }
            )
        else:
            contacts.upsert(
                {
                    "PartitionKey": "contact",
                    "RowKey": row,
                    "Address": update.address,
                    "UndeliverableSince": now,
                    "UndeliverableDetail": update.detail,
                }
            )


def _record_notices(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    if not plan.notices:
        return
    stores.table(NOTICES).upsert_batch(
        {
            "PartitionKey": plan.message_key,
            "RowKey": f"{i}-{n.kind}",
            "Kind": n.kind,
            "To": n.to,
            "Reason": n.reason[:1000],
            "Sent": n.sent,
            "Mailbox": plan.mailbox,
            "At": now,
            "RecordType": plan.record.type if plan.record else None,
            "RecordKey": plan.record.key if plan.record else None,
        }
        for i, n in enumerate(plan.notices)
    )


def _file_unfiled(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    """drop, reject, hold: nothing is filed on a record, but the decision is kept with its
    reasons, and a held message keeps what is needed to map it again when released."""
    row = {
        "PartitionKey": plan.message_key,
        "RowKey": plan.action,
        "Mailbox": plan.mailbox,
        "SourceId": plan.source_id[:1000],
        "Folder": plan.folder,
        "Blob": plan.blob,
        "Kind": plan.kind,
        "Reasons": "\n".join(plan.reasons)[:4000],
        "At": now,
    }
    stores.table(MESSAGES).upsert(row)
    if plan.action == "hold":
        stores.table(HELD).upsert(
            {
                **row,
                "PartitionKey": plan.mailbox,
                "RowKey": plan.message_key[:400],
                "Sender": plan.sender,
            }
        )


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
    if plan.action in ("drop", "reject", "hold"):
        _file_unfiled(stores, plan, now)
        _apply_contacts(stores, plan, now)
        _record_notices(stores, plan, now)
        _act_on_mailbox(stores, plan, now, source_for)
        log.info(
            "file: mailbox=%s key=%s action=%s", plan.mailbox, plan.message_key[:40], plan.action
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
            if own.get("Folder") != plan.folder and own.get("TimelineRow"):
                # A move: the timeline shows where the mail is now.
                stores.table(TIMELINE).upsert(
                    {
                        "PartitionKey": f"{own['RecordType']}-{own['RecordKey']}",
                        "RowKey": own["TimelineRow"],
                        "Folder": plan.folder,
                    }
                )
        messages.upsert_batch(updates)
    else:
        if plan.entry is None:
            raise ContractError(f"plan {plan.action} for {plan.message_key[:40]} has no entry")
        created, display_id = False, None
        if plan.action == "create":
            created, display_id = ensure_record(stores, config, plan, now)
            if created:
                audit(
                    stores,
                    MAILFILER,
                    "create",
                    plan.record,
                    f"from {plan.mailbox}: " + "; ".join(plan.reasons)[:1500],
                    now,
                )
        else:
            _update_fields(stores, plan, now)
        _write_timeline(stores, plan.record, plan)
        _apply_contacts(stores, plan, now)
        if plan.conversation_id and plan.primary:
            stores.table(CONVERSATIONS).upsert(
                {
                    "PartitionKey": plan.mailbox,
                    "RowKey": conversation_row(plan.conversation_id),
                    "RecordType": plan.record.type,
                    "RecordKey": plan.record.key,
                }
            )
        if plan.sender and plan.entry.direction == "in" and plan.primary:
            # insert: the first filing's time counts, a redelivery changes nothing
            stores.table(SENDERS).insert(
                {
                    "PartitionKey": sender_partition(plan.sender),
                    "RowKey": activity_row(plan.message_key),
                    "At": now,
                }
            )
        if plan.participants:
            stores.table(PARTICIPANTS).upsert_batch(
                {
                    "PartitionKey": f"{plan.record.type}-{plan.record.key}",
                    "RowKey": contact_row(address),
                    "Address": address,
                }
                for address in plan.participants
            )
        _record_notices(stores, plan, now)
        # Written last, in one transaction: from here on the message counts as filed.
        messages.upsert_batch(
            [
                {
                    "PartitionKey": plan.message_key,
                    "RowKey": _message_row(plan),
                    "RecordType": plan.record.type,
                    "RecordKey": plan.record.key,
                    "MessageId": (plan.entry.message_id or "")[:1000],
                    "Mailbox": plan.mailbox,
                    "SourceId": plan.source_id[:1000],
                    "Folder": plan.folder,
                    "Blob": plan.blob,
                    "Kind": plan.kind,
                    "TimelineRow": timeline_row(plan),
                    "FiledAt": now,
                    "Reasons": "\n".join(plan.reasons)[:4000],
                },
                sighting,
            ]
        )
        if events.enabled(config):
            if display_id is None and plan.action != "create":
                row = stores.table(RECORDS).get(plan.record.type, plan.record.key)
                display_id = row.get("DisplayId") if row else None
            events.emit(
                stores, events.filing_events(plan, created=created, display_id=display_id, now=now)
            )
    if plan.primary:
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
    # insert, never replace: a mail edited after it was filed (Graph reports edits as updates)
    # does not rewrite the record's history, and a redelivered plan changes nothing.
    stores.table(TIMELINE).insert(
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
            "Text": entry.text,
            "TextBlob": entry.text_blob,
            "Kind": entry.kind,
            "Attachments": json.dumps([a.model_dump(exclude_none=True) for a in entry.attachments])[
                :30000
            ],
            "Mailbox": plan.mailbox,
            "Folder": plan.folder,
            "Blob": plan.blob,
        }
    )


def _act_on_mailbox(
    stores: Stores, plan: FilingPlan, now: datetime, source_for: Callable[[str], MailboxSource]
) -> None:
    if not plan.mailbox_actions:
        return
    results = source_for(plan.mailbox).apply(plan.source_id, plan.mailbox_actions)
    done = ", ".join(f"{r.action.action}{'' if r.done else ' (recorded)'}" for r in results)
    audit(
        stores,
        MAILFILER,
        "mailbox_action",
        plan.record,
        f"{plan.mailbox}: {done} for {plan.message_key[:80]}",
        now,
    )
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
