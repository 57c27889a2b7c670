"""The map stage's decision: from a message and what the stores know to a filing plan.

This is the simple first version (a new record per new conversation, replies by
In-Reply-To/References to the same record); the routing engine replaces `decide` with the same
signature. Pure: no I/O and no clock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .config import Config, Route
from .contracts import (
    SNIPPET_CHARS,
    AttachmentInfo,
    FilingPlan,
    MailboxAction,
    RecordRef,
    TimelineEntry,
)
from .message import MailMessage, id_key

MAX_THREAD_LOOKUPS = 32  # References beyond the last 32 are not looked up (issue 3, rule 3c)


@dataclass(frozen=True)
class FiledMessage:
    """What the message index says about a message already filed."""

    record: RecordRef
    mailbox: str
    source_id: str
    folder: str | None


@dataclass(frozen=True)
class Known:
    """The facts the map stage gathered from storage before deciding."""

    filed: FiledMessage | None = None
    thread: dict[str, RecordRef] = field(default_factory=dict)  # Message-ID -> its record


def thread_lookups(message: MailMessage) -> tuple[str, ...]:
    """The Message-IDs whose records the decision needs: the thread's, newest last."""
    return message.thread_ids[-MAX_THREAD_LOOKUPS:]


def record_key(record_type: str, root_id_key: str) -> str:
    """A record's stable key, derived from its conversation's root.

    Deriving it (instead of allocating one) makes creation idempotent and race-free: a reply
    mapped before its parent is filed still lands on the record the parent creates.
    """
    return hashlib.sha256(f"{record_type}\x00{root_id_key}".encode()).hexdigest()[:32]


def pick_route(config: Config, message: MailMessage) -> tuple[str, dict[str, str | int], str]:
    """The record type, default fields and reason for a new conversation in this mailbox."""
    recipients = {a.email.lower() for a in (*message.to, *message.cc)}
    for route in config.routes:
        if route.mailbox not in (None, message.mailbox):
            continue
        if route.to is None or _matches_alias(route, recipients):
            why = f"route {route.name!r}" + (f" matched recipient {route.to}" if route.to else "")
            return route.record_type, dict(route.fields), why
    mailbox = config.mailbox(message.mailbox)
    if mailbox is None or mailbox.record_type is None:
        raise LookupError(f"mailbox {message.mailbox!r} is not in the configuration")
    return mailbox.record_type, {}, f"mailbox {mailbox.name!r} default record type"


def _matches_alias(route: Route, recipients: set[str]) -> bool:
    assert route.to is not None
    want_local, _, want_domain = route.to.partition("@")
    for address in recipients:
        local, _, domain = address.partition("@")
        if domain == want_domain and (local == want_local or local.split("+", 1)[0] == want_local):
            return True
    return False


def timeline_entry(message: MailMessage) -> TimelineEntry:
    return TimelineEntry(
        message_key=message.key,
        message_id=message.message_id,
        subject=message.subject[:1000],
        from_=str(message.from_) if message.from_ else "",
        to=tuple(str(a) for a in message.to[:50]),
        cc=tuple(str(a) for a in message.cc[:50]),
        date=message.date,
        snippet=" ".join(message.text.split())[:SNIPPET_CHARS],
        attachments=tuple(
            AttachmentInfo(filename=a.filename, content_type=a.content_type, size=a.size)
            for a in message.attachments[:50]
        ),
    )


def decide(message: MailMessage, known: Known, config: Config, *, blob: str) -> FilingPlan:
    def plan(**decision: Any) -> FilingPlan:
        return FilingPlan(
            message_key=message.key,
            mailbox=message.mailbox,
            source_id=message.source_id,
            blob=blob,
            folder=message.folder,
            **decision,
        )

    if known.filed is not None:
        prior = known.filed
        same_place = (prior.mailbox, prior.source_id) == (message.mailbox, message.source_id)
        # The mailbox actions run again (they are idempotent) unless the mail was moved: a crash
        # after filing may have skipped them, but a move is someone's decision to respect.
        actions = _mailbox_actions(config, message.mailbox)
        if same_place and prior.folder == message.folder:
            why = "already filed from this mailbox: a redelivery, nothing to change"
        elif same_place:
            why = f"already filed; moved from folder {prior.folder!r} to {message.folder!r}"
            actions = ()
        else:
            why = f"already filed from mailbox {prior.mailbox!r}: recorded as another sighting"
        return plan(action="sighting", record=prior.record, mailbox_actions=actions, reasons=(why,))

    actions = _mailbox_actions(config, message.mailbox)
    entry = timeline_entry(message)
    for mid in reversed(thread_lookups(message)):
        record = known.thread.get(mid)
        if record is not None:
            header = "In-Reply-To" if mid in message.in_reply_to else "References"
            why = f"{header} <{mid}> is filed on {record.type} {record.key}"
            return plan(
                action="attach",
                record=record,
                entry=entry,
                mailbox_actions=actions,
                reasons=(why,),
            )

    record_type, fields, route_why = pick_route(config, message)
    root = message.thread_ids[0] if message.thread_ids else None
    root_key = id_key(root) if root else message.key
    why = (
        f"new conversation ({route_why})"
        if root is None
        else f"no filed message in its thread; conversation root <{root}> ({route_why})"
    )
    return plan(
        action="create",
        record=RecordRef(type=record_type, key=record_key(record_type, root_key)),
        title=message.normalized_subject or message.subject or "(no subject)",
        fields=fields,
        root=root is None,
        entry=entry,
        mailbox_actions=actions,
        reasons=(why,),
    )


def _mailbox_actions(config: Config, mailbox_name: str) -> tuple[MailboxAction, ...]:
    mailbox = config.mailbox(mailbox_name)
    if mailbox is None:
        return ()
    after = mailbox.after_filing
    actions: list[MailboxAction] = []
    if after.mark_read:
        actions.append(MailboxAction(action="mark_read"))
    if after.category:
        actions.append(MailboxAction(action="categorize", category=after.category))
    if after.move_to:
        actions.append(MailboxAction(action="move", folder=after.move_to))
    return tuple(actions)
