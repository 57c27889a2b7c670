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
4. for automatic mail, takes one of the recipient's slots (`store/outbox.reserve`: one row per
   recipient, written only if its ETag is unchanged, so two workers can never both take the
   last one; a redelivered mail finds its own slot and takes no other);
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

import hashlib
import logging
from datetime import datetime

from ..core.config import (
    Config,
    EwsMailbox,
    GraphMailbox,
    ImapMailbox,
    LocalMailbox,
    Mailbox,
)
from ..core.contracts import FilingPlan, OutboundMail
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
    check_wire,
    compose,
    one_line,
    refusal,
    render,
)
from ..core.signing import signed_message_id, signed_ref_header
from ..services.audit import Actor, audit
from ..services.context import AppContext
from ..services.replies import reply_subject
from ..services.server_busy import note_busy
from ..store import notices, outbox
from ..store.backoff import seconds_left
from ..store.queues import decode
from ..store.stores import FILING, NOTICES, OUTBOUND, OUTBOX

log = logging.getLogger(__name__)


def handle_outbound(ctx: AppContext, body: bytes, now: datetime) -> str:
    mail = decode(body, OutboundMail)
    stores, config = ctx.stores, ctx.config
    sent = outbox.sent(stores.table(OUTBOX), mail.id)
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
        why = outbox.reserve(stores.table(OUTBOX), to, mail.id, now, _limits(config))
        if why:
            outbox.release(stores.table(OUTBOX), taken, mail.id, now)
            return _refuse(ctx, mail, why, now)
        taken.append(to)
    try:
        answer = _transmit(ctx, mailbox, draft, raw)
    except OutboundError as exc:
        outbox.release(stores.table(OUTBOX), taken, mail.id, now)
        return _refuse(ctx, mail, str(exc), now)
    except Exception as exc:
        busy = note_busy(stores, mailbox.name, exc, now)
        if busy is None:
            raise
        outbox.release(stores.table(OUTBOX), taken, mail.id, now)  # taken again when sent
        return _later(ctx, mail, busy, "server busy")
    # At once: from here on a redelivery finds it sent and only completes the records.
    outbox.note_sent(stores.table(OUTBOX), mail, now, message_id=draft.message_id, answer=answer)
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


def _later(ctx: AppContext, mail: OutboundMail, seconds: int, why: str) -> str:
    """The mailbox's server asked for quiet: the mail is sent after it (a delayed copy of this
    message; its stable id still sends it once), never by sleeping here."""
    ctx.stores.queues.send(OUTBOUND, mail, delay_seconds=seconds)
    where = f"mailbox={mail.mailbox} id={mail.id[:40]}"
    log.info("outbound: %s %s; again in %d s", where, why, seconds)
    return f"{why}; again in {seconds} s"


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
        notices.sent(
            stores.table(NOTICES), mail.message_key, mail.notice_row, now, draft.message_id
        )
    if mail.record is not None:
        _to_timeline(ctx, mail, mailbox, draft, raw)
    outbox.recorded(stores.table(OUTBOX), mail.id)


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


def _refuse(ctx: AppContext, mail: OutboundMail, why: str, now: datetime) -> str:
    stores = ctx.stores
    log.warning("outbound: mailbox=%s id=%s refused: %s", mail.mailbox, mail.id[:40], why)
    outbox.note_refused(stores.table(OUTBOX), mail, now, why)
    if mail.message_key and mail.notice_row:
        notices.refused(stores.table(NOTICES), mail.message_key, mail.notice_row, why)
    audit(stores, Actor(mail.actor, "mailfiler"), "send refused", mail.record, why[:1500], now)
    return f"refused: {why}"


STAGE = "outbound"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `outbound` (called by its trigger: functions/stage.py)."""
    return handle_outbound(ctx, body, now)
