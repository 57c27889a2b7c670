"""File: carry out a filing plan in Table Storage, then hand the mailbox actions on.

Idempotent under redelivery: every write has a key derived from the plan, and the message index
entry (what makes a message count as filed) is written last. Mailbox actions are requested only
after the filing is committed, and run by their own step (actions_stage.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

from ..core.config import Config
from ..core.contracts import MAX_PARTICIPANTS, FilingPlan
from ..services import events
from ..services.actions import MAILFILER, request_actions, sighting_row
from ..services.audit import audit_rows, record_partition
from ..services.context import AppContext
from ..services.replies import queue_notices
from ..services.retention import schedule_deletion
from ..sources.base import MailboxSource
from ..store import notices
from ..store.errors import ContractError
from ..store.keys import (
    CONTACT,
    contact_partition,
    conversation_row,
    participant_row,
    short_hash,
)
from ..store.numbers import create_numbered
from ..store.queues import decode
from ..store.stores import (
    AUDIT,
    CONTACTS,
    CONVERSATIONS,
    HELD,
    MESSAGES,
    NOTICES,
    RECORDS,
    TIMELINE,
    Stores,
)
from ..store.tables import Table
from ..telemetry import instruments

log = logging.getLogger(__name__)


def timeline_row(plan: FilingPlan) -> str:
    stamp = plan.entry.date.strftime("%Y%m%dT%H%M%S") if plan.entry and plan.entry.date else "0"
    return f"{stamp}-{hashlib.sha256(plan.message_key.encode()).hexdigest()[:24]}"


def ensure_record(
    stores: Stores, config: Config, plan: FilingPlan, now: datetime
) -> tuple[bool, str | None, datetime]:
    """Create the plan's record once, numbered.

    Returns whether this plan is the record's creator (also when redelivered), its display id
    and when it was created. Several plans may race to create one record (a thread's mails
    often arrive together): the record's key comes from the conversation, so the first insert
    wins and the others file onto it.
    """
    assert plan.record is not None
    record_type = config.record_type(plan.record.type)
    prefix = record_type.prefix if record_type else plan.record.type.upper()
    entity: dict[str, Any] = {
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
    number, existing = create_numbered(stores, plan.record.type, prefix, entity)
    if existing is None:
        return True, f"{prefix}-{number}", now
    if plan.root:
        # A reply mapped first created the record; the conversation's first mail names it.
        keep = ("CreatedAt", "CreatedFrom", "Status")
        stores.table(RECORDS).upsert({k: v for k, v in entity.items() if k not in keep})
    creator = existing.get("CreatedFrom") == plan.message_key[:400]
    return creator, existing.get("DisplayId"), existing.get("CreatedAt", now)


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


def _write_contacts(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    """Contact updates, one transaction per contact's partition: usually one request. (The rate
    limit's count is not written here: the map stage claims a slot before it plans.)"""
    by_partition: dict[str, list[tuple[Literal["insert", "upsert"], dict[str, Any]]]] = {}
    for update in plan.contacts:
        partition = contact_partition(update.address)
        if update.kind == "guest":
            # insert, not upsert: a guest never overwrites a contact someone set up
            row: dict[str, Any] = {
                "Address": update.address,
                "Name": update.name[:200],
                "Kind": "guest",
                "Allowed": True,
                "CreatedAt": now,
            }
            op: Literal["insert", "upsert"] = "insert"
        else:
            row = {
                "Address": update.address,
                "UndeliverableSince": now,
                "UndeliverableDetail": update.detail,
            }
            op = "upsert"
        by_partition.setdefault(partition, []).append(
            (op, {"PartitionKey": partition, "RowKey": CONTACT, **row})
        )
    _transact_each(stores.table(CONTACTS), by_partition.values())


def _transact_each(
    table: Table, groups: Iterable[list[tuple[Literal["insert", "upsert"], dict[str, Any]]]]
) -> None:
    """Each group in one transaction; where an insert finds its row there, the group's other
    writes go one by one (the insert is already done: a redelivery or a concurrent filing)."""
    for operations in groups:
        if table.transact(operations):
            continue
        for op, entity in operations:
            if op == "insert":
                table.insert(entity)
            else:
                table.upsert(entity)


def _record_notices(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    if not plan.notices:
        return
    notices.record(stores.table(NOTICES), plan, now)


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
    _put_own_row(stores.table(MESSAGES), row, plan)
    if plan.action == "hold":
        held = {**row, "PartitionKey": plan.mailbox, "RowKey": plan.message_key[:400]}
        _put_own_row(stores.table(HELD), {**held, "Sender": plan.sender}, plan)


def _put_own_row(table: Table, row: dict[str, Any], plan: FilingPlan) -> None:
    """Write `row` so that each copy of a mail (its mailbox, source id and raw bytes) keeps a
    row of its own: two different mails sharing a Message-ID, or one mail in two mailboxes,
    never overwrite each other, and a redelivery of the same copy rewrites its own row.

    The first copy takes the plain RowKey (an insert only one writer can win, so two workers
    cannot both take it); any other copy gets the RowKey plus a hash of what it is."""
    if table.insert(row) is not None:
        return
    taken = table.get(row["PartitionKey"], row["RowKey"])
    if taken is None or _copy_of(taken) == _copy_of(row):
        table.upsert(row)  # a redelivery of this copy (or a row deleted meanwhile)
        return
    own = short_hash(plan.mailbox, plan.source_id, plan.blob, length=24)
    table.upsert({**row, "RowKey": f"{str(row['RowKey'])[:400]}-{own}"})


def _copy_of(row: dict[str, Any]) -> tuple[object, object, object]:
    return row.get("Mailbox"), row.get("SourceId"), row.get("Blob")


def file_plan(
    stores: Stores,
    config: Config,
    body: bytes,
    *,
    now: datetime,
    source_for: Callable[[str], MailboxSource] | None = None,  # noqa: ARG001
) -> FilingPlan:
    """`source_for` is no longer used (mailbox actions run in their own stage); kept so
    callers that pass it keep working."""
    plan = decode(body, FilingPlan)
    messages = stores.table(MESSAGES)
    if plan.action in ("drop", "reject", "hold"):
        _file_unfiled(stores, plan, now)
        _write_contacts(stores, plan, now)
        _record_notices(stores, plan, now)
        queue_notices(stores, plan, None)
        _act_on_mailbox(stores, config, plan, now)
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
        side: list[dict[str, Any]] = []  # rows beside the record's timeline entry
        if plan.action == "create":
            created, display_id, created_at = ensure_record(stores, config, plan, now)
            if created:
                day, on_record = audit_rows(
                    MAILFILER,
                    "create",
                    plan.record,
                    f"from {plan.mailbox}: " + "; ".join(plan.reasons)[:1500],
                    created_at,
                    once=plan.message_key,
                )
                stores.table(AUDIT).upsert(day)
                side.append(on_record or {})
        else:
            _update_fields(stores, plan, now)
        side.extend(
            {
                "PartitionKey": record_partition(plan.record),
                "RowKey": participant_row(address),
                "Address": address,
            }
            for address in plan.participants[:MAX_PARTICIPANTS]
        )
        _write_timeline(stores, plan, side)
        _write_contacts(stores, plan, now)
        if plan.conversation_id and plan.primary:
            stores.table(CONVERSATIONS).upsert(
                {
                    "PartitionKey": plan.mailbox,
                    "RowKey": conversation_row(plan.conversation_id),
                    "RecordType": plan.record.type,
                    "RecordKey": plan.record.key,
                }
            )
        _record_notices(stores, plan, now)
        if plan.notices:
            if display_id is None:
                row = stores.table(RECORDS).get(plan.record.type, plan.record.key)
                display_id = row.get("DisplayId") if row else None
            queue_notices(stores, plan, display_id)
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
        _act_on_mailbox(stores, config, plan, now)
    metrics = instruments()
    if metrics is not None:
        metrics.filed.add(1, {"mailbox": plan.mailbox, "action": plan.action})
    log.info(
        "file: mailbox=%s key=%s action=%s record=%s",
        plan.mailbox,
        plan.message_key[:40],
        plan.action,
        plan.record.key,
    )
    return plan


def _write_timeline(stores: Stores, plan: FilingPlan, side: list[dict[str, Any]]) -> None:
    """The timeline entry and the rows beside it, in one transaction.

    The entry is inserted, never replaced: a mail edited after it was filed (Graph reports edits
    as updates) does not rewrite the record's history, and a redelivered plan changes nothing.
    """
    assert plan.entry is not None and plan.record is not None
    entry = plan.entry
    row = {
        "PartitionKey": record_partition(plan.record),
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
        "Flag": entry.flag,
    }
    _transact_each(stores.table(TIMELINE), [[("insert", row), *(("upsert", r) for r in side)]])


def _act_on_mailbox(
    stores: Stores,
    config: Config,
    plan: FilingPlan,
    now: datetime,
) -> None:
    """The mail is filed: its mailbox actions become a pending row and a `mailbox-actions`
    message (actions_stage.py), run once per mail and mailbox, retried there, never lost."""
    request_actions(stores, plan, now)
    if plan.action != "hold":
        schedule_deletion(stores, config, plan, now)


STAGE = "file"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `filing` (called by its trigger: functions/stage.py)."""
    return file_plan(ctx.stores, ctx.config, body, now=now)
