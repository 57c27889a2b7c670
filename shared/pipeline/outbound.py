"""Queue `outbound`: send a notice or a reply through the mailbox it belongs to, once.

The notices the routing engine records (acknowledge, reject, forward) and replies written
through the API (`POST /api/records/{type}/{id}/reply`) become `OutboundMail` messages. This
stage, for each:

1. skips it if it was sent already (table `Outbox`, PK `sent`): queues deliver at least once.
   The row is written the moment the server took the mail, with `Recorded` false until the
   bookkeeping below is done, so a redelivery after a crash completes that and sends nothing;
2. for automatic mail, applies RFC 3834 (`core/outbound.refusal`) and the per-recipient limits
   (rows PK `r-<recipient hash>` in `Outbox`); a refusal is recorded with its reason, not
   retried;
3. composes the mail (`core/outbound.compose`: header injection refused, size limited) with a
   signed Message-ID and `X-Mailfiler-Ref`, so replies thread back to the record;
4. sends it through the mailbox: Graph `sendMail` (MIME, saved to Sent Items), EWS
   SendAndSaveCopy, or SMTP plus an IMAP APPEND to the Sent folder;
5. records it: `Outbox`, the notice's row (`Sent`), the audit trail (`send`), and, for mail
   about a record, a filing plan that puts the sent mail on the record's timeline (direction
   out) through the file stage.

A send that fails raises: the queue retries it with back-off and, after five attempts, moves
it to `outbound-poison` with the reason (`mailfiler poison list outbound`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from ..core.config import (
    Config,
    EwsMailbox,
    GraphMailbox,
    ImapMailbox,
    LocalMailbox,
    Mailbox,
)
from ..core.contracts import FilingPlan, OutboundAttachment, OutboundMail, RecordRef
from ..core.decide import timeline_entry
from ..core.message import id_key
from ..core.mime import parse_message
from ..core.outbound import (
    Attachment,
    Draft,
    Limits,
    OutboundError,
    check_address,
    check_text,
    compose,
    one_line,
    over_limit,
    refusal,
    render,
)
from ..core.signing import signed_message_id, signed_ref_header
from ..store.keys import short_hash
from ..store.queues import decode
from ..store.stores import FILING, NOTICES, OUTBOUND, OUTBOX, Stores
from .audit import Actor, audit
from .context import AppContext

log = logging.getLogger(__name__)
SENT, REFUSED = "sent", "refused"
MAX_ATTACHMENTS = 20


def sender_of(mailbox: Mailbox) -> str | None:
    """The address a mailbox sends from: its first listed address, else its own name."""
    if mailbox.addresses:
        return mailbox.addresses[0]
    if isinstance(mailbox, GraphMailbox) and "@" in mailbox.user:
        return mailbox.user
    if isinstance(mailbox, EwsMailbox):
        return mailbox.email
    if isinstance(mailbox, ImapMailbox) and "@" in mailbox.username:
        return mailbox.username
    return None


def own_addresses(config: Config) -> set[str]:
    found: set[str] = set()
    for mailbox in config.mailboxes:
        found.update(a.lower() for a in mailbox.addresses)
        sender = sender_of(mailbox)
        if sender:
            found.add(sender.lower())
    return found


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
            notice_row=f"{i}-{notice.kind}",
        )
        for i, notice in enumerate(plan.notices)
    ]


def queue_notices(stores: Stores, plan: FilingPlan, display_id: str | None) -> None:
    for mail in notices_of(plan, display_id):
        stores.queues.send(OUTBOUND, mail)


def handle_outbound(ctx: AppContext, body: bytes, now: datetime) -> str:
    mail = decode(body, OutboundMail)
    stores, config = ctx.stores, ctx.config
    sent = stores.table(OUTBOX).get(SENT, mail.id)
    if sent is not None and sent.get("Recorded", True):
        return "already sent"
    mailbox = config.mailbox(mail.mailbox)
    if mailbox is None:
        return _refuse(ctx, mail, f"mailbox {mail.mailbox!r} is not configured", now)
    sender = sender_of(mailbox)
    if sender is None:
        return _refuse(ctx, mail, f"mailbox {mailbox.name} has no address to send from", now)
    if sent is not None:
        # Sent, but the bookkeeping after it broke off: finish that, never send again. The
        # mail is composed anew as it was (same id, same Date), for its timeline entry.
        when = sent["At"]
        draft = _draft(ctx, mail, mailbox, sender, when)
        raw = compose(draft, config.outbound.max_bytes)
        _record_sent(ctx, mail, mailbox, draft, raw, str(sent.get("Answer", "")), when)
        return "sent before; its records completed now"
    if mail.kind != "reply":  # automatic: RFC 3834 and the per-recipient limits
        own = own_addresses(config)
        for to in mail.to:
            why = refusal(to, {}, own) or over_limit(
                _sent_to(stores, to, now), now, _limits(config)
            )
            if why:
                return _refuse(ctx, mail, why, now)
    try:
        draft = _draft(ctx, mail, mailbox, sender, now)
        raw = compose(draft, config.outbound.max_bytes)
        answer = _transmit(ctx, mailbox, raw, sender, (*mail.to, *mail.cc))
    except OutboundError as exc:
        return _refuse(ctx, mail, str(exc), now)
    # At once: from here on a redelivery finds it sent and only completes the records.
    _outbox_row(
        stores,
        SENT,
        mail,
        now,
        MessageId=draft.message_id[:1000],
        Answer=answer[:1000],
        Recorded=False,
        RecordType=mail.record.type if mail.record else None,
        RecordKey=mail.record.key if mail.record else None,
    )
    _record_sent(ctx, mail, mailbox, draft, raw, answer, now)
    log.info(
        "outbound: mailbox=%s id=%s kind=%s sent (%s)",
        mailbox.name,
        mail.id[:40],
        mail.kind,
        answer,
    )
    return f"sent: {answer}"


def _limits(config: Config) -> Limits:
    limits = config.outbound.limits
    return Limits(limits.window_minutes, limits.per_window, limits.per_day)


def _recipient_partition(address: str) -> str:
    return "r-" + short_hash(address.strip().lower())


def _sent_to(stores: Stores, address: str, now: datetime) -> list[datetime]:
    since = (now - timedelta(days=1)).strftime("%Y%m%dT%H%M%S")
    return [
        row["At"]
        for row in stores.table(OUTBOX).partition(_recipient_partition(address), row_from=since)
        if isinstance(row.get("At"), datetime)
    ]


def _draft(
    ctx: AppContext, mail: OutboundMail, mailbox: Mailbox, sender: str, now: datetime
) -> Draft:
    config = ctx.config
    record_type = config.record_type(mail.record.type) if mail.record else None
    digest = hashlib.sha256(mail.id.encode()).hexdigest()
    domain = config.signing.message_id_domain
    key = ctx.signing_keys[0] if ctx.signing_keys else None
    if mail.record is not None and key is not None:
        message_id = signed_message_id(mail.record, digest[:12], key, domain)
        ref = signed_ref_header(mail.record, key)
    else:
        message_id, ref = f"mf-{digest[:32]}@{domain}", None
    token = f"[{mail.display_id}]" if mail.display_id else ""
    attachments: tuple[Attachment, ...] = ()
    if mail.kind == "reply":
        subject, body = mail.subject or "", mail.body or ""
        if token and token not in subject:
            subject = f"{subject} {token}".strip()  # replies thread back by the token too
        found = []
        for item in mail.attachments:
            data = ctx.stores.blobs.get(item.blob)
            if data is None:
                raise OutboundError(f"attachment {item.filename!r} is no longer stored")
            found.append(Attachment(item.filename, item.content_type, data))
        attachments = tuple(found)
    else:
        template = config.outbound.template(mail.kind, record_type)
        values = {
            "token": mail.display_id or "",
            "subject": one_line(mail.original_subject)[:300],
            "reason": one_line(mail.reason)[:500],
            "sender": one_line(mail.original_sender),
            "mailbox": mailbox.name,
            "record_type": mail.record.type if mail.record else "",
        }
        subject = one_line(render(template.subject, values))
        body = render(template.body, values)
        if mail.kind == "forward" and mail.original_blob:
            original = ctx.stores.blobs.get(mail.original_blob)
            if original is not None:
                attachments = (Attachment("original.eml", "message/rfc822", original),)
    return Draft(
        sender=sender,
        sender_name=mailbox.name if mail.kind != "reply" else "",
        to=mail.to,
        cc=mail.cc,
        subject=subject,
        body=body,
        message_id=message_id,
        date=now,
        in_reply_to=mail.in_reply_to,
        references=mail.references,
        automatic=mail.kind != "reply",
        ref_header=ref,
        attachments=attachments,
    )


def _transmit(
    ctx: AppContext, mailbox: Mailbox, raw: bytes, sender: str, recipients: tuple[str, ...]
) -> str:
    if isinstance(mailbox, GraphMailbox | EwsMailbox):
        source: Any = ctx.source(mailbox.name)
        return str(source.send_mime(raw))
    if isinstance(mailbox, ImapMailbox | LocalMailbox) and mailbox.smtp is not None:
        from ..sources.smtp import send_smtp

        token = None
        if isinstance(mailbox, ImapMailbox) and mailbox.smtp.auth == "xoauth2":
            from ..sources.registry import imap_token

            imap = mailbox

            def token() -> str:
                return imap_token(imap, ctx.stores)

        answer = send_smtp(mailbox.smtp, raw, sender, recipients, token=token)
        if isinstance(mailbox, ImapMailbox) and mailbox.smtp.sent_folder:
            try:
                imap_source: Any = ctx.source(mailbox.name)
                imap_source.append(mailbox.smtp.sent_folder, raw)
            except Exception as exc:  # sent is sent: a missing copy must not send it twice
                log.warning("outbound: mailbox=%s no copy in Sent: %s", mailbox.name, exc)
                answer += "; no copy in Sent"
        return answer
    raise OutboundError(f"mailbox {mailbox.name} cannot send: give it an smtp block")


def _record_sent(
    ctx: AppContext,
    mail: OutboundMail,
    mailbox: Mailbox,
    draft: Draft,
    raw: bytes,
    answer: str,
    now: datetime,
) -> None:
    stores = ctx.stores
    rows: list[dict[str, Any]] = []
    if draft.automatic:
        stamp = now.strftime("%Y%m%dT%H%M%S%f")
        rows.extend(
            {
                "PartitionKey": _recipient_partition(to),
                "RowKey": f"{stamp}-{short_hash(mail.id)}",
                "At": now,
                "MailId": mail.id[:400],
            }
            for to in mail.to
        )
    for row in rows:
        stores.table(OUTBOX).upsert(row)
    actor = Actor(mail.actor, "api" if mail.kind == "reply" else "mailfiler")
    detail = f"{mail.kind} to {', '.join(mail.to)}: <{draft.message_id}> ({answer})"
    audit(stores, actor, "send", mail.record, detail[:1500], now)
    if mail.message_key and mail.notice_row:
        stores.table(NOTICES).upsert(
            {
                "PartitionKey": mail.message_key,
                "RowKey": mail.notice_row,
                "Sent": True,
                "SentAt": now,
                "SentMessageId": draft.message_id[:1000],
            }
        )
    if mail.record is not None:
        _to_timeline(ctx, mail, mailbox, draft, raw)
    stores.table(OUTBOX).upsert({"PartitionKey": SENT, "RowKey": mail.id[:500], "Recorded": True})


def _to_timeline(
    ctx: AppContext, mail: OutboundMail, mailbox: Mailbox, draft: Draft, raw: bytes
) -> None:
    """The sent mail on the record's timeline (direction out), through the file stage."""
    assert mail.record is not None
    blob = ctx.stores.blobs.put_raw(raw)
    parsed = parse_message(raw, mailbox=mailbox.name, source_id=f"outbound:{mail.id}")
    entry = timeline_entry(parsed, draft.body, "out", "human")
    plan = FilingPlan(
        action="attach",
        message_key=id_key(draft.message_id),
        mailbox=mailbox.name,
        source_id=f"outbound:{mail.id}"[:1000],
        blob=blob,
        folder="Sent",
        record=mail.record,
        entry=entry,
        reasons=(f"sent by Mailfiler ({mail.kind})",),
        kind="human",
        participants=tuple(a.lower() for a in (*draft.to, *draft.cc)),
    )
    ctx.stores.queues.send(FILING, plan)


def _outbox_row(
    stores: Stores, outcome: str, mail: OutboundMail, now: datetime, **fields: Any
) -> None:
    stores.table(OUTBOX).upsert(
        {
            "PartitionKey": outcome,
            "RowKey": mail.id[:500],
            "Kind": mail.kind,
            "Mailbox": mail.mailbox,
            "To": ", ".join(mail.to)[:2000],
            "At": now,
            **fields,
        }
    )


def _refuse(ctx: AppContext, mail: OutboundMail, why: str, now: datetime) -> str:
    stores = ctx.stores
    log.warning("outbound: mailbox=%s id=%s refused: %s", mail.mailbox, mail.id[:40], why)
    _outbox_row(stores, REFUSED, mail, now, Reason=why[:2000])
    if mail.message_key and mail.notice_row:
        stores.table(NOTICES).upsert(
            {
                "PartitionKey": mail.message_key,
                "RowKey": mail.notice_row,
                "Sent": False,
                "Refused": why[:1000],
            }
        )
    audit(stores, Actor(mail.actor, "mailfiler"), "send refused", mail.record, why[:1500], now)
    return f"refused: {why}"


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
    """`POST /api/records/{type}/{id}/reply`: check the request now (a 400 beats a poison
    message later) and queue the mail. Raises RecordError."""
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
    entries = timeline(stores, record)
    inbound = [e for e in entries if e.get("direction") == "in" and e.get("message_id")]
    default_to = [record["Contact"]] if record.get("Contact") else []
    try:
        to = tuple(check_address(a, "to") for a in _addresses(body.get("to", default_to), "to"))
        cc = tuple(check_address(a, "cc") for a in _addresses(body.get("cc", []), "cc"))
        subject = body.get("subject")
        if subject is None:
            title = str(record.get("Title") or (inbound[-1]["subject"] if inbound else ""))
            subject = title if title.lower().startswith("re:") else f"Re: {title}"
        if not isinstance(subject, str):
            raise OutboundError("subject must be a string")
        check_text("subject", subject)
    except OutboundError as exc:
        raise RecordError(400, "invalid_mail", str(exc)) from exc
    if not to:
        raise RecordError(400, "no_recipient", "to: the record has no contact; name a recipient")
    mailbox_name = str(body.get("mailbox") or record.get("Mailbox") or "")
    mailbox = config.mailbox(mailbox_name)
    if mailbox is None:
        raise RecordError(400, "unknown_mailbox", f"mailbox {mailbox_name!r} is not configured")
    if sender_of(mailbox) is None:
        raise RecordError(400, "no_sender", f"mailbox {mailbox.name} has no address to send from")
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
    stores.queues.send(OUTBOUND, mail)
    return mail


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
