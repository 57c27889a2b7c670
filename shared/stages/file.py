"""File: carry out a filing plan in Table Storage, then hand the mailbox actions on.

Idempotent under redelivery: every write has a key derived from the plan, and the message index
entry (what makes a message count as filed) is written last. Mailbox actions are requested only
after the filing is committed, and run by their own step (actions_stage.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core.config import Config
from ..core.contracts import MAX_PARTICIPANTS, FilingPlan
from ..core.logtext import log_mail
from ..services import events
from ..services.actions import MAILFILER, request_actions
from ..services.context import AppContext
from ..services.replies import queue_notices
from ..services.retention import schedule_deletion
from ..sources.base import MailboxSource
from ..store import audit_trail, contacts, conversations, held, messages, notices, records, timeline
from ..store.errors import ContractError
from ..store.queues import decode
from ..store.stores import (
    NOTICES,
    Stores,
)
from ..store.tables import Entity
from ..telemetry import instruments

log = logging.getLogger(__name__)


def ensure_record(
    stores: Stores, config: Config, plan: FilingPlan, now: datetime
) -> tuple[bool, str | None, datetime, Entity | None]:
    """Create the plan's record once, numbered, with the day's audit row of its creation.

    Returns whether this plan is the record's creator (also when redelivered), its display id,
    when it was created, and the audit row beside the record's timeline (None unless the
    creator). Several plans may race to create one record (a thread's mails often arrive
    together): the record's key comes from the conversation, so the first insert wins and the
    others file onto it.
    """
    assert plan.record is not None
    record_type = config.record_type(plan.record.type)
    prefix = record_type.prefix if record_type else plan.record.type.upper()
    columns: dict[str, Any] = {
        "Title": (plan.title or "")[:1000],
        "Status": "new",
        "CreatedAt": now,
        "CreatedFrom": plan.message_key[:400],
        "Mailbox": plan.mailbox,
        "Contact": plan.sender,
        **records.field_columns(plan.fields),
    }
    # The day's audit row rides in the record's own transaction: no write of its own.
    day, on_record = _creation_audit(plan, now)
    beside = [audit_trail.beside_record(day, plan.record)]
    number, existing = records.create(stores, plan.record, prefix, columns, beside)
    if existing is None:
        return True, f"{prefix}-{number}", now, on_record
    if plan.root:
        # A reply mapped first created the record; the conversation's first mail names it.
        keep = ("CreatedAt", "CreatedFrom", "Status")
        changes = {k: v for k, v in columns.items() if k not in keep}
        records.merge(stores, plan.record, changes, current=existing)
    creator = existing.get("CreatedFrom") == plan.message_key[:400]
    created_at = existing.get("CreatedAt", now)
    if not creator:
        return False, existing.get("DisplayId"), created_at, None
    # A redelivery of the creator: its transaction wrote the day's row, unless an older build
    # (which wrote it after the record, to table Audit) created the record and stopped before.
    day, on_record = _creation_audit(plan, created_at)
    audit_trail.write_beside_record(stores, day, plan.record)
    return True, existing.get("DisplayId"), created_at, on_record


def _creation_audit(plan: FilingPlan, at: datetime) -> tuple[Entity, Entity | None]:
    """The audit rows of the record's creation from this mail: the same keys however often it
    is written (`once`)."""
    assert plan.record is not None
    return audit_trail.audit_rows(
        MAILFILER.name,
        MAILFILER.source,
        "create",
        plan.record,
        f"from {plan.mailbox}: " + "; ".join(plan.reasons)[:1500],
        at,
        once=plan.message_key,
    )


def _update_fields(stores: Stores, plan: FilingPlan, now: datetime) -> str | None:
    """The plan's fields, tags and status onto its record (and the record's index row, which
    the plan names when the map stage read the record, else the record as read here); returns
    the record's display id when learnt on the way."""
    assert plan.record is not None
    if not plan.fields and not plan.tags and not plan.status:
        return None
    columns: dict[str, Any] = {"UpdatedAt": now, **records.field_columns(plan.fields)}
    if plan.tags:
        columns["Tags"] = ",".join(plan.tags)[:1000]
    if plan.status:
        columns["Status"] = plan.status
    if plan.index_row is not None:
        records.merge(stores, plan.record, columns, index_row_key=plan.index_row)
        return None  # the plan's display id, read with the index row's key
    # A plan of an older build, or a record not created yet when mapped: read it.
    current = records.get(stores, plan.record)
    records.merge(stores, plan.record, columns, current=current)
    return str(current["DisplayId"]) if current and current.get("DisplayId") else None


def _record_notices(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    if not plan.notices:
        return
    notices.record(stores.table(NOTICES), plan, now)


def _file_unfiled(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    """drop, reject, hold: nothing is filed on a record, but the decision is kept with its
    reasons, and a held message keeps what is needed to map it again when released."""
    messages.note_unfiled(stores, plan, now)
    if plan.action == "hold":
        held.hold(stores, plan, now)


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
    if plan.action in ("drop", "reject", "hold"):
        _file_unfiled(stores, plan, now)
        contacts.apply(stores, plan.contacts, now)
        _record_notices(stores, plan, now)
        queue_notices(stores, plan, None)
        _act_on_mailbox(stores, config, plan, now)
        log.info(
            "file: mailbox=%s %s action=%s (not filed)", plan.mailbox, _mail(plan), plan.action
        )
        return plan
    if plan.record is None:
        raise ContractError(f"plan {plan.action} for {plan.message_key[:40]} names no record")
    display_id = plan.display_id  # None unless the map stage read the record's row
    if plan.action == "sighting" and plan.filed_copy is False:
        # Another copy than the filed one (the map stage knew it): nothing of the index to follow.
        messages.note_sighting(stores, plan, now, filed_copy=False)
    elif plan.action == "sighting":
        own = messages.filed(stores, plan.message_key) or {}
        # The copy the message index points at: the index and the timeline follow its folder.
        ours = (own.get("Mailbox"), own.get("SourceId")) == (plan.mailbox, plan.source_id)
        if ours and own.get("Folder") != plan.folder and own.get("TimelineRow"):
            # A move: the timeline shows where the mail is now.
            timeline.move_entry(stores, messages.record_of(own), own["TimelineRow"], plan.folder)
        messages.note_sighting(stores, plan, now, filed_copy=ours)
    else:
        if plan.entry is None:
            raise ContractError(f"plan {plan.action} for {plan.message_key[:40]} has no entry")
        created = False
        side: list[dict[str, Any]] = []  # rows beside the record's timeline entry
        if plan.action == "create":
            created, display_id, _, on_record = ensure_record(stores, config, plan, now)
            if on_record is not None:
                side.append(on_record)
        else:
            display_id = _update_fields(stores, plan, now) or display_id
        side.extend(timeline.participant_rows(plan.record, plan.participants[:MAX_PARTICIPANTS]))
        timeline.write_entry(
            stores,
            plan.record,
            plan.entry,
            message_key=plan.message_key,
            mailbox=plan.mailbox,
            folder=plan.folder,
            blob=plan.blob,
            side=side,
        )
        contacts.apply(stores, plan.contacts, now)
        if plan.conversation_id and plan.primary:
            conversations.link(stores, plan.mailbox, plan.conversation_id, plan.record)
        _record_notices(stores, plan, now)
        if plan.notices:
            if display_id is None:
                display_id = records.display_id(stores, plan.record)
            queue_notices(stores, plan, display_id)
        # Written last, in one transaction: from here on the message counts as filed.
        messages.note_filed(stores, plan, now, display_id)
        if events.enabled(config):
            if display_id is None and plan.action != "create":
                display_id = records.display_id(stores, plan.record)
            events.emit(
                stores, events.filing_events(plan, created=created, display_id=display_id, now=now)
            )
    if plan.primary:
        _act_on_mailbox(stores, config, plan, now)
    metrics = instruments()
    if metrics is not None:
        metrics.filed.add(1, {"mailbox": plan.mailbox, "action": plan.action})
    if log.isEnabledFor(logging.INFO):
        # Records by the name people use (CASE-12): one read when this filing did not learn it.
        if display_id is None:
            display_id = records.display_id(stores, plan.record)
        log.info(
            "file: mailbox=%s record=%s action=%s %s",
            plan.mailbox,
            display_id or f"{plan.record.type} (not numbered yet)",
            plan.action,
            _mail(plan),
        )
    return plan


def _mail(plan: FilingPlan) -> str:
    """The mail as people name it: its Message-ID and subject (the key when it has neither)."""
    entry = plan.entry
    if entry is None or not (entry.message_id or entry.subject):
        return f"key={plan.message_key[:40]}"
    return log_mail(entry.message_id, entry.subject)


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
