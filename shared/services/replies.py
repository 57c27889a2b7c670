"""Replies and notices: what a record's reply and the routing engine's notices become (an
`OutboundMail` on queue `outbound`), checked before they are queued. The `outbound` stage sends
them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from ..core.config import (
    Config,
    ImapMailbox,
    LocalMailbox,
    Mailbox,
)
from ..core.contracts import FilingPlan, OutboundAttachment, OutboundMail, RecordRef
from ..core.identity import sender_of
from ..core.outbound import (
    Attachment,
    Draft,
    OutboundError,
    check_address,
    check_text,
    compose,
    one_line,
)
from ..store.keys import notice_row
from ..store.stores import OUTBOUND, Stores

MAX_ATTACHMENTS = 20


def notices_of(plan: FilingPlan, display_id: str | None) -> list[OutboundMail]:
    """The notices a filing recorded, as mail to send (one each, ids stable per plan)."""
    original_id = plan.entry.message_id if plan.entry else _message_id_of_key(plan.message_key)
    subject = (plan.entry.subject if plan.entry else None) or plan.title or ""
    return [
        OutboundMail(
            id=f"{plan.message_key}-{i}",
            kind=notice.kind,
            mailbox=plan.mailbox,
            to=(notice.to,),
            record=plan.record if notice.kind == "acknowledge" else None,
            display_id=display_id if notice.kind == "acknowledge" else None,
            reason=notice.reason,
            in_reply_to=original_id if notice.kind != "forward" else None,
            references=(original_id,) if original_id and notice.kind != "forward" else (),
            original_subject=subject,
            original_sender=plan.sender or "",
            original_blob=plan.blob,
            message_key=plan.message_key,
            notice_row=notice_row(i, notice.kind),
        )
        for i, notice in enumerate(plan.notices)
    ]


def queue_notices(stores: Stores, plan: FilingPlan, display_id: str | None) -> None:
    for mail in notices_of(plan, display_id):
        stores.queues.send(OUTBOUND, mail)


def reply_subject(subject: str, display_id: str | None) -> str:
    """A reply's subject with the record's token appended: replies thread back by it too."""
    token = f"[{display_id}]" if display_id else ""
    if token and token not in subject:
        return f"{subject} {token}".strip()
    return subject


def cannot_send(mailbox: Mailbox) -> str | None:
    """Why this mailbox cannot send at all (no retry will fix it), or None."""
    if not mailbox.enabled:
        return f"mailbox {mailbox.name} is disabled"
    if isinstance(mailbox, ImapMailbox | LocalMailbox) and mailbox.smtp is None:
        return f"mailbox {mailbox.name} cannot send: give it an smtp block"
    return None


def _message_id_of_key(key: str) -> str | None:
    """Message keys are the Message-ID's UTF-8 hex (see core.message.id_key) unless hashed."""
    try:
        return bytes.fromhex(key).decode("utf-8")
    except ValueError:
        return None


def reply_from_record(
    stores: Stores,
    config: Config,
    record: dict[str, Any],
    body: Any,
    actor: str,
) -> OutboundMail:
    """`POST /api/records/{type}/{id}/reply`: check the request now and queue the mail; a 422
    with the reason beats a mail that later lands in `outbound-poison`. Raises RecordError:
    400 for a body of the wrong shape, 413 for too much text, 422 for a mail that could not be
    sent (recipients, subject, attachment names, the mailbox)."""
    from .records import RecordError, timeline

    if not isinstance(body, dict):
        raise RecordError(400, "invalid_body", "the body must be a JSON object")
    unknown = set(body) - {"to", "cc", "subject", "body", "mailbox", "attachments"}
    if unknown:
        raise RecordError(400, "unknown_field", f"unknown fields: {', '.join(sorted(unknown))}")
    text = body.get("body")
    if not isinstance(text, str) or not text.strip():
        raise RecordError(400, "invalid_body", "body: the reply's text is required")
    if len(text) > 1_000_000:
        raise RecordError(413, "too_large", "body: at most 1,000,000 characters")
    subject = body.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise RecordError(400, "invalid_mail", "subject must be a string")
    entries = timeline(stores, record)
    inbound = [e for e in entries if e.get("direction") == "in" and e.get("message_id")]
    default_to = [record["Contact"]] if record.get("Contact") else []
    try:
        wanted_to = _addresses(body.get("to", default_to), "to")
        wanted_cc = _addresses(body.get("cc", []), "cc")
    except OutboundError as exc:
        raise RecordError(400, "invalid_mail", str(exc)) from exc
    try:  # as they go on the wire: IDNA domains in punycode
        to = tuple(check_address(a, "to") for a in wanted_to)
        cc = tuple(check_address(a, "cc") for a in wanted_cc)
    except OutboundError as exc:
        raise RecordError(422, "invalid_recipient", str(exc)) from exc
    if not to:
        raise RecordError(422, "no_recipient", "to: the record has no contact; name a recipient")
    what = "subject"
    if subject is None:
        title = str(record.get("Title") or (inbound[-1]["subject"] if inbound else ""))
        subject = title if title.lower().startswith("re:") else f"Re: {title}"
        what = "subject (from the record's title; give one)"
    try:
        check_text(what, reply_subject(subject, record.get("DisplayId")))
    except OutboundError as exc:
        raise RecordError(422, "invalid_subject", str(exc)) from exc
    mailbox_name = str(body.get("mailbox") or record.get("Mailbox") or "")
    mailbox = config.mailbox(mailbox_name)
    if mailbox is None:
        raise RecordError(422, "unknown_mailbox", f"mailbox {mailbox_name!r} is not configured")
    sender = sender_of(mailbox)
    if sender is None:
        raise RecordError(422, "no_sender", f"mailbox {mailbox.name} has no address to send from")
    why = cannot_send(mailbox)
    if why:
        raise RecordError(422, "cannot_send", why)
    ids = [str(e["message_id"]) for e in entries if e.get("message_id")]
    attachments = _record_attachments(entries, body.get("attachments", []))
    mail = OutboundMail(
        id=f"reply-{uuid.uuid4().hex}",
        kind="reply",
        mailbox=mailbox.name,
        to=to,
        cc=cc,
        record=RecordRef(type=record["PartitionKey"], key=record["RowKey"]),
        display_id=record.get("DisplayId"),
        subject=subject,
        body=text,
        in_reply_to=str(inbound[-1]["message_id"]) if inbound else None,
        references=tuple(ids[-10:]),
        attachments=attachments,
        actor=actor,
    )
    _dry_run(config, mail, sender)
    stores.queues.send(OUTBOUND, mail)
    return mail


def _dry_run(config: Config, mail: OutboundMail, sender: str) -> None:
    """Compose the reply now, as the outbound stage will (attachments without their bytes),
    so whatever compose() would refuse is a 422 with its reason, not a refusal later."""
    from .records import RecordError

    draft = Draft(
        sender=sender,
        to=mail.to,
        cc=mail.cc,
        subject=reply_subject(mail.subject or "", mail.display_id),
        body=mail.body or "",
        message_id=f"dry-run.{mail.id}@{config.signing.message_id_domain}",
        date=datetime(2000, 1, 1, tzinfo=UTC),
        in_reply_to=mail.in_reply_to,
        references=mail.references,
        attachments=tuple(Attachment(a.filename, a.content_type, b"") for a in mail.attachments),
    )
    try:
        compose(draft, config.outbound.max_bytes)
    except OutboundError as exc:
        raise RecordError(422, "invalid_mail", str(exc)) from exc


def _record_attachments(
    entries: list[dict[str, Any]], wanted: Any
) -> tuple[OutboundAttachment, ...]:
    """Attachments named by their blob (as `GET /api/records/...` lists them); only those of
    this record's own mail can be sent, never an arbitrary blob."""
    from .records import RecordError

    if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
        raise RecordError(400, "invalid_attachments", "attachments: a list of blob names")
    if len(wanted) > MAX_ATTACHMENTS:
        raise RecordError(400, "invalid_attachments", f"at most {MAX_ATTACHMENTS} attachments")
    known: dict[str, dict[str, Any]] = {}
    for entry in entries:
        for item in entry.get("attachments") or []:
            if isinstance(item, dict) and item.get("blob"):
                known.setdefault(str(item["blob"]), item)
    out = []
    for blob in wanted:
        item = known.get(blob)
        if item is None:
            raise RecordError(
                400, "unknown_attachment", f"{blob} is not an attachment of this record's mail"
            )
        # Stored as bytes because its content was not what it claimed: sent as bytes too.
        kind = "application/octet-stream" if item.get("note") else item.get("content_type")
        out.append(
            OutboundAttachment(
                blob=blob,
                filename=one_line(str(item.get("filename") or "attachment"))[:200],
                content_type=str(kind or "application/octet-stream"),
            )
        )
    return tuple(out)


def _addresses(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OutboundError(f"{name} must be a list of addresses")
    if len(value) > 50:
        raise OutboundError(f"{name}: at most 50 addresses")
    return value
