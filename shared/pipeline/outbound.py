"""Queue `outbound`: send a notice or a reply through the mailbox it belongs to, once.

The notices the routing engine records (acknowledge, reject, forward) and replies written
through the API (`POST /api/records/{type}/{id}/reply`) become `OutboundMail` messages. This
stage, for each:

1. skips it if it was sent already (table `Outbox`, PK `sent`): queues deliver at least once.
   The row is written the moment the server took the mail, with `Recorded` false until the
   bookkeeping below is done, so a redelivery after a crash completes that and sends nothing;
2. for automatic mail, applies RFC 3834 (`core/outbound.refusal`); a refusal is recorded with
   its reason, not retried;
3. composes the mail (`core/outbound.compose`: headers written by hand, header injection
   refused, size limited) with a signed Message-ID and `X-Mailfiler-Ref`, so replies thread
   back to the record;
4. for automatic mail, takes one of the recipient's slots (`_reserve`: one row per recipient,
   PK `r-<recipient hash>`, RK `slots`, written only if its ETag is unchanged, so two workers
   can never both take the last one; a redelivered mail finds its own slot and takes no other);
5. checks the bytes once more (`core/outbound.check_wire`) and sends them through the mailbox:
   Graph `sendMail` (MIME, saved to Sent Items), EWS SendAndSaveCopy, or SMTP plus an IMAP
   APPEND to the Sent folder;
6. records it: `Outbox`, the notice's row (`Sent`), the audit trail (`send`), and, for mail
   about a record, a filing plan that puts the sent mail on the record's timeline (direction
   out) through the file stage.

A send that fails raises: the queue retries it with back-off and, after five attempts, moves
it to `outbound-poison` with the reason (`mailfiler poison list outbound`). A mailbox whose
server asked for quiet (its back-off, store/backoff.py, noted by any stage) sends nothing until
it ends: the mail is re-queued for then, and a busy answer to the send itself notes the
back-off and does the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
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
from ..core.identity import own_addresses, sender_of
from ..core.message import id_key
from ..core.mime import parse_message
from ..core.outbound import (
    Attachment,
    Draft,
    Limits,
    OutboundError,
    check_address,
    check_text,
    check_wire,
    compose,
    one_line,
    over_limit,
    refusal,
    render,
)
from ..core.signing import signed_message_id, signed_ref_header
from ..store.backoff import seconds_left
from ..store.keys import short_hash
from ..store.queues import decode
from ..store.stores import FILING, NOTICES, OUTBOUND, OUTBOX, Stores
from .audit import Actor, audit
from .context import AppContext
from .server_busy import note_busy

log = logging.getLogger(__name__)
SENT, REFUSED = "sent", "refused"
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
    if sent is None and not mailbox.enabled:  # retrying cannot fix it: refused at once
        return _refuse(ctx, mail, f"mailbox {mailbox.name} is disabled", now)
    if sent is not None:
        # Sent, but the bookkeeping after it broke off: finish that, never send again. The
        # mail is composed anew as it was (same id, same Date), for its timeline entry.
        when = sent["At"]
        draft = _draft(ctx, mail, mailbox, sender, when)
        raw = compose(draft, config.outbound.max_bytes)
        _record_sent(ctx, mail, mailbox, draft, raw, str(sent.get("Answer", "")), when)
        return "sent before; its records completed now"
    wait = seconds_left(stores, mailbox.name, now)
    if wait:
        return _later(ctx, mail, wait, "backing off")
    automatic = mail.kind != "reply"
    if automatic:  # RFC 3834
        own = own_addresses(config)
        for to in mail.to:
            why = refusal(to, {}, own)
            if why:
                return _refuse(ctx, mail, why, now)
    try:
        draft = _draft(ctx, mail, mailbox, sender, now)
        raw = compose(draft, config.outbound.max_bytes)
    except OutboundError as exc:
        return _refuse(ctx, mail, str(exc), now)
    # The per-recipient limits, after composing (a mail refused for its content takes no
    # slot) and before sending.
    taken: list[str] = []
    for to in [check_address(a, "to") for a in draft.to] if automatic else []:
        why = _reserve(stores, to, mail.id, now, _limits(config))
        if why:
            _release(stores, taken, mail.id, now)
            return _refuse(ctx, mail, why, now)
        taken.append(to)
    try:
        answer = _transmit(ctx, mailbox, draft, raw)
    except OutboundError as exc:
        _release(stores, taken, mail.id, now)
        return _refuse(ctx, mail, str(exc), now)
    except Exception as exc:
        busy = note_busy(stores, mailbox.name, exc, now)
        if busy is None:
            raise
        _release(stores, taken, mail.id, now)  # taken again when it is sent
        return _later(ctx, mail, busy, "server busy")
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


SLOTS = "slots"
_CONTENDED = 100  # ETag conflicts in a row before giving up (the queue then retries)


def _slots(row: dict[str, Any] | None, now: datetime, keep: timedelta) -> dict[str, datetime]:
    """The automatic mails a recipient got lately: mail-id hash -> when its slot was taken."""
    if row is None:
        return {}
    try:
        found = json.loads(str(row.get("Slots") or "{}"))
    except ValueError:
        found = {}
    slots = {}
    for tag, stamp in found.items() if isinstance(found, dict) else ():
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            when = datetime.fromtimestamp(float(stamp), UTC)
            if when > now - keep:
                slots[str(tag)] = when
    return slots


def _write_slots(
    stores: Stores, address: str, row: dict[str, Any] | None, slots: dict[str, datetime]
) -> bool:
    """Write the recipient's slots only if nobody changed them since `row` was read."""
    entity = {
        "PartitionKey": _recipient_partition(address),
        "RowKey": SLOTS,
        # Whole seconds and 12-hex tags: 1,000 slots (the most the limits allow) fit in a
        # property's 64 KiB.
        "Slots": json.dumps({t: int(w.timestamp()) for t, w in slots.items()}),
    }
    table = stores.table(OUTBOX)
    if row is None:
        return table.insert(entity) is not None
    return table.update_if_unchanged(entity, str(row["_etag"]))


def _reserve(
    stores: Stores, address: str, mail_id: str, now: datetime, limits: Limits
) -> str | None:
    """Take one of `address`'s automatic-mail slots for `mail_id`: None when taken (or held by
    this mail already: a redelivery), else why not. ETag-guarded: read, decide, write only if
    unchanged, else read again, so concurrent workers cannot both take the last slot."""
    keep = timedelta(minutes=max(limits.window_minutes, 24 * 60))
    tag = short_hash(mail_id, length=12)
    for _ in range(_CONTENDED):
        row = stores.table(OUTBOX).get(_recipient_partition(address), SLOTS)
        slots = _slots(row, now, keep)
        if tag in slots:
            return None
        why = over_limit(list(slots.values()), now, limits)
        if why:
            return why
        if _write_slots(stores, address, row, {**slots, tag: now}):
            return None
    raise RuntimeError(f"outbound: the slots of {short_hash(address)} stayed contended")


def _release(stores: Stores, addresses: list[str], mail_id: str, now: datetime) -> None:
    """Give back slots taken for a mail that was then refused (it never went out)."""
    tag = short_hash(mail_id, length=12)
    for address in addresses:
        for _ in range(_CONTENDED):
            row = stores.table(OUTBOX).get(_recipient_partition(address), SLOTS)
            if row is None:
                break
            slots = _slots(row, now, timedelta(days=3650))
            if tag not in slots:
                break
            del slots[tag]
            if _write_slots(stores, address, row, slots):
                break


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
    attachments: tuple[Attachment, ...] = ()
    if mail.kind == "reply":
        subject, body = reply_subject(mail.subject or "", mail.display_id), mail.body or ""
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


def reply_subject(subject: str, display_id: str | None) -> str:
    """A reply's subject with the record's token appended: replies thread back by it too."""
    token = f"[{display_id}]" if display_id else ""
    if token and token not in subject:
        return f"{subject} {token}".strip()
    return subject


def _later(ctx: AppContext, mail: OutboundMail, seconds: int, why: str) -> str:
    """The mailbox's server asked for quiet: the mail is sent after it (a delayed copy of this
    message; its stable id still sends it once), never by sleeping here."""
    ctx.stores.queues.send(OUTBOUND, mail, delay_seconds=seconds)
    where = f"mailbox={mail.mailbox} id={mail.id[:40]}"
    log.info("outbound: %s %s; again in %d s", where, why, seconds)
    return f"{why}; again in {seconds} s"


def cannot_send(mailbox: Mailbox) -> str | None:
    """Why this mailbox cannot send at all (no retry will fix it), or None."""
    if not mailbox.enabled:
        return f"mailbox {mailbox.name} is disabled"
    if isinstance(mailbox, ImapMailbox | LocalMailbox) and mailbox.smtp is None:
        return f"mailbox {mailbox.name} cannot send: give it an smtp block"
    return None


def _transmit(ctx: AppContext, mailbox: Mailbox, draft: Draft, raw: bytes) -> str:
    # The gate again, on the very bytes a transport gets: nothing between compose() and
    # here may have let a line break or a header of its own in.
    check_wire(raw, draft)
    sender = check_address(draft.sender, "from")
    recipients = tuple(check_address(a, "to") for a in (*draft.to, *draft.cc))
    if isinstance(mailbox, GraphMailbox | EwsMailbox):
        return ctx.source(mailbox.name).send_mime(raw)
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
                ctx.source(mailbox.name).append(mailbox.smtp.sent_folder, raw)
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
