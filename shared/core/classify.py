"""What kind of mail a message is: a person's, or one of the machines' (and which machine).

`classify` is a pure function of a `MailMessage` (and of how we recognise our own mail); it
never raises. The rules run in this order and the first kind that matches wins:

1. ``own_loop``: our own mail came back. Our loop header (`OwnMail.loop_header`) is present;
   or an ``X-Loop`` header names one of our addresses; or the Message-ID's domain is one we
   generate *and* From is one of our addresses (both: other mailers share our domain), which
   is how the copy of mail Mailfiler sent, read back from a Sent folder, is recognised (the
   outbound stage filed it already). Every one of these signs can be written by a stranger,
   so `own_loop` may only ever *stop* mail (its default action is drop, recorded with the
   reasons): it never makes mail outbound and never gives a sender standing on a record.
   A stranger who writes them gets nothing but their own mail dropped. Direction and trust
   are decided from where the mail was read and the mailbox server's Authentication-Results
   (`decide.py`), not here.
2. ``bounce``: a delivery failure or delay notice. Any one *strong* signal: Content-Type
   ``multipart/report`` (unless its report-type is feedback-report or
   disposition-notification), ``report-type=delivery-status``, a ``message/delivery-status``
   part, an ``X-Failed-Recipients`` header, or a subject that *starts* like a bounce
   ("Undeliverable:", "Undelivered Mail Returned to Sender", "Delivery Status Notification
   (Failure)", "Mail delivery failed:", "Returned mail:", "failure notice", "Unzustellbar:",
   ...: vendor texts; a forward "Fw: Undeliverable: ..." is a person's mail, and generic words
   such as "Delivery failed for order 12" count only from a daemon sender). Or a *daemon
   sender* (mailer-daemon, postmaster, "Mail Delivery System/Subsystem", "Microsoft Outlook"
   postmaster) or a null sender (``Return-Path: <>``, a missing From) together with a bounce
   phrase in the subject or the first lines of the body ("This is the qmail-send program",
   "This message was created automatically by mail delivery software", "could not be
   delivered", ...). Delay notices are bounces too; their `Dsn.action` is ``delayed``:
   the non-RFC forms of sendmail ("Warning: could not send message for past 4 hours",
   "Warning--Could not send mail ..."), Postfix ("Delayed Mail (still being retried)"),
   Exim ("Warning: message ... delayed 24 hours"), qmail's deferral text, Exchange
   ("Delivery delayed:"), Gmail ("Delivery Status Notification (Delay)", "Delivery
   incomplete"), Yahoo, Courier ("WARNING: delayed mail."), MDaemon and Lotus Domino
   ("DELIVERY FAILURE:"/"DELIVERY DELAYED:"); see tests/data/dsn_forms/.
3. ``feedback``: an abuse/feedback report: ``report-type=feedback-report``, a
   ``message/feedback-report`` part, a ``Feedback-Type`` header, Hotmail's JMRP complaint
   (``X-HmXmrOriginalRecipient`` in the attached mail), an Apple Mail unsubscribe request
   (``X-Apple-Unsubscribe: true``). ``X-AntiAbuse``/``X-Abuse-Info`` are ignored: hosting
   panels and some providers put them on every mail.
4. ``auto_reply``: ``Auto-Submitted`` other than ``no`` (but ``auto-generated`` mail that
   also carries list headers is a notification: ``bulk``), ``X-Autoreply``,
   ``X-Autorespond``, ``X-Autoresponder``, ``Precedence: auto_reply``,
   ``X-MS-Exchange-Inbox-Rules-Loop``, ``X-MS-Exchange-Generated-Message-Source``,
   ``X-Apple-Action: VACATION``, a read receipt (``report-type=disposition-notification``);
   or an unambiguous auto-reply subject prefix ("Automatic reply:", "AUTO:", "Auto reply:",
   "[Auto-Reply]", "Automatische Antwort:", "Réponse automatique :", "Respuesta
   automática:", ...); or a softer subject that *starts* with an absence phrase ("Out of
   office", "Abwesenheitsnotiz", "Fuera de la oficina", "Afwezig", "Vacation", ...)
   together with a weak header signal (null Return-Path, Precedence bulk/junk/list, an
   In-Reply-To with an X-Mailer/User-Agent naming an autoresponder). A subject hint after a
   reply prefix ("Re: Out of office tomorrow?") is a person's. ``X-Auto-Response-Suppress``
   is never a signal: Outlook puts it on ordinary mail too.
5. ``bulk``: list headers (``List-Id``, ``List-Unsubscribe``, ``List-Post``, ...),
   ``Precedence: bulk|list|junk``, ESP campaign headers (``X-Mailchimp-*``, ``X-MC-User``,
   ``X-Campaign*``, ``X-SG-EID``, ``Feedback-ID``, ...), a no-reply sender.
6. ``human``: everything else.

`Classification.reasons` name the headers and patterns that decided, never body text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from shared.core.dsn import Dsn, extract_dsn
from shared.core.message import MailMessage

__all__ = ["Classification", "Dsn", "Kind", "OwnMail", "classify"]

Kind = Literal["human", "auto_reply", "bounce", "feedback", "bulk", "own_loop"]

MAX_REASON = 80
_BODY_HEAD = 3_000  # characters of body text looked at for bounce phrases


@dataclass(frozen=True, slots=True)
class Classification:
    kind: Kind
    reasons: tuple[str, ...]
    dsn: Dsn | None = None


@dataclass(frozen=True)
class OwnMail:
    """How we recognise our own mail coming back."""

    addresses: frozenset[str] = frozenset()
    message_id_domains: frozenset[str] = frozenset()
    loop_header: str = "X-Mailfiler-Loop"


# --- patterns ----------------------------------------------------------------------------------

# re.search with a flag argument pays a slow enum lookup in re's cache on every call.
_DAEMON_FROM = re.compile(r"mailer-daemon|<>", re.I)
_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([A-Za-z0-9_-]+)", re.I)

# A reply or forward prefix: what follows was written by someone else.
_REPLY_PREFIX = re.compile(
    r"^\s*(?:re|fw|fwd|aw|wg|sv|vs|vl|antw|doorst|tr|rv|r|i|enc|odp|pd|ynt|fs|továbbítás"
    r"|ответ|пересл|回复|转发|回覆|轉寄)\s*(?:\[\d+\])?\s*[:：]",
    re.I,
)

# Subjects only mail systems write (vendor texts); alone they make a bounce.
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:"
    r"undeliverable\s*(?::|mail\b|message\b)|undelivered mail returned to sender"
    r"|(?:mail )?delivery status notification\s*(?:\((?:failure|delay)|:)"
    r"|delivery notification: delivery has|mail delivery failed\s*:"
    r"|message delivery has failed|returned mail\s*:|failure notice\s*$"
    r"|delivery has failed|nondeliverable mail|non-deliverable:"
    r"|warning\s*(?::|-{1,3})\s*could not send (?:message|mail)|warning: message .{0,80} delayed"
    r"|delayed mail \(still being retried\)|postmaster notify: see transcript"
    # Delay and warning notices in their vendors' words: Exchange, Courier, MDaemon,
    # Lotus Domino, Gmail (sendmail's and Exim's are above).
    r"|delivery delayed\s*:|warning: delayed mail|warning: message delivery delayed"
    r"|delivery (?:failure|delayed)\s*:|permanent delivery failure|\*\* delivery incomplete"
    r"|delivery delay notification|undeliverable mail\s*:|mail could not be delivered\s*$"
    r"|notice: mail delivery status|mail system error - returned mail"
    r"|non remis\s*:|unzustellbar\s*:|nicht zustellbar\s*:|onbestelbaar\s*:"
    r"|no se puede entregar\s*:|non recapitabile\s*:|impossible de remettre"
    r"|olevererbart\s*:|kan ikke leveres\s*:|ei voitu toimittaa"
    r"|ваше сообщение не доставлено|недоставленное сообщение|メッセージを配信できません"
    r")",
    re.I,
)
# Words that make a daemon's subject a bounce (with a daemon or null sender).
_BOUNCE_SUBJECT_WORDS = re.compile(
    r"deliver|fail|undeliver|returned|error|notice|status|bounce|not member|delay|rejected"
    r"|warning|could not send|not (?:yet )?(?:been )?sent|retr(?:y|ied)|deferred"
    r"|zustell|remis|entregar|verzögert|retard|доставлен|配信",
    re.I,
)
_BOUNCE_BODY = re.compile(
    r"qmail-send program|created automatically by mail delivery software"
    r"|could not be delivered|couldn't be delivered|was not delivered|wasn't delivered"
    r"|could not deliver|unable to deliver|undeliverable|undelivered"
    r"|delivery (?:to the following recipients? )?(?:has )?failed|failed permanently"
    r"|permanent(?:ly)? (?:fatal )?error|did not reach (?:some or all of )?the intended"
    r"|could not be reached|error delivering|delivery status notification"
    r"|wasn't able to deliver|not able to deliver|returned to (?:the )?sender"
    r"|the following addresses had permanent|message could not be sent"
    r"|mail delivery (?:system|subsystem|failed)|delivery problem|has been delayed"
    r"|not yet been delivered|still being retried|will be retried|delivery attempts"
    # delay and warning notices (sendmail, Postfix, Exim, Courier, Exchange, Gmail, qmail)
    r"|warning message only|warning only|you do not need to resend|(?:will )?keep trying"
    r"|has not (?:yet )?been (?:sent|delivered)|hasn't been delivered|not been sent yet"
    r"|delivery (?:is |has been )?delayed|delivery to the following recipients? (?:has been )?"
    r"delayed|temporary problem delivering|delivery will continue to be attempted"
    r"|have not yet received your message|could not deliver it at this time"
    r"|user unknown|mailbox unavailable|no such user|recipient not found"
    r"|are not (?:a )?member|rejected your message|message was rejected|message rejected"
    r"|nicht zugestellt|unzustellbar|pas pu être remis|no se ha podido entregar"
    r"|не доставлено|не может быть доставлено|配信できません|送信できません|届きません",
    re.I,
)
_DAEMON_NAME = re.compile(
    r"mail ?delivery (?:system|subsystem|service)|mailer[- ]?daemon|postmaster|mail administrator"
    r"|ndr administrator|mail delivery",
    re.I,
)
_DAEMON_LOCAL = re.compile(
    r"^(?:mailer-daemon|mailer_daemon|maildaemon|mail-daemon|postmaster|poostmaster|mdaemon"
    r"|mail\.delivery\.system|mail-delivery|maildelivery|bounce[sd]?|sysadmin)$",
    re.I,
)

_AUTO_PREFIX = re.compile(
    r"^\s*(?:"
    r"automatic reply\s*:|auto(?:matic)?[- ]?reply\s*:|autoreply\s*:|auto[- ]?response\s*:"
    r"|automatic response\s*:|auto\s*:|\[auto[- ]?reply\]|\[auto[- ]?response\]"
    r"|\[automatic reply\]|out of office auto ?reply\s*:"
    r"|abwesenheitsnotiz\s*:|automatische antwort\s*:|réponse automatique\s*:"
    r"|reponse automatique\s*:|respuesta automática\s*:|respuesta automatica\s*:"
    r"|risposta automatica\s*:|resposta automática\s*:|resposta automatica\s*:"
    r"|automatisch antwoord\s*:|autosvar\s*:|automatisk svar\s*:|automaattinen vastaus\s*:"
    r"|odpowiedź automatyczna\s*:|\[automatyczna odpowied[źz]\]|automatyczna odpowied[źz]\s*:"
    r"|automatická odpověď\s*:|автоматический ответ\s*:"
    r"|automatikus válasz\s*:|otomatik yanıt\s*:|自动回复|自動回覆|自動応答|自動返信|자동 회신"
    r")",
    re.I,
)
_AUTO_HINT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:"
    r"out of (?:the )?office|ooo\b|away from (?:the |my )?(?:office|desk|e-?mail)|away until"
    r"|i am (?:out|away)|i'm (?:out|away)|on (?:vacation|holiday|leave)|vacation|holiday"
    r"|absence|absent|abwesen|nicht im (?:büro|hause)|urlaub|fuera de la oficina|ausente"
    r"|afwezig|niet aanwezig|absent du bureau|en congés|hors du bureau|fuori sede|assente"
    r"|fuori ufficio|fora do escritório|ausente do escritório|frånvaro|fraværende|poissa"
    r"|nieobecn|отсутств|不在|休暇|auto(?:matic)?[- ]?(?:reply|response)|autoreply|autorespon"
    r"|thank you for (?:your )?(?:e-?mail|message|contacting)|we have received your"
    r")",
    re.I,
)
_LOOP_ADDRESS = re.compile(r"[^\s<>,;:\"'()\[\]]+@[^\s<>,;:\"'()\[\]]+")
_AUTORESPONDER_AGENT = re.compile(r"vacation|auto-?respon|auto-?reply|out of office", re.I)

_LIST_HEADERS = (
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Help",
    "List-Subscribe",
    "List-Owner",
    "List-Archive",
    "Mailing-List",
    "X-Mailing-List",
)
_LIST_NAMES = frozenset(name.lower() for name in _LIST_HEADERS)
_ESP_HEADER = re.compile(
    r"^(?:x-mailchimp-.*|x-mc-user|x-mc-.*|x-campaign.*|x-campaignid|x-sg-eid|x-sg-id"
    r"|feedback-id|x-mailgun-campaign.*|x-mailjet-campaign|x-mj-.*|x-newsletter.*"
    r"|x-marketo.*|x-mkto.*|x-sfmc-.*|x-rpcampaign|x-csa-complaints|x-emarsys-.*"
    r"|x-ems-.*|x-hubspot-.*|x-klaviyo-.*|x-sendinblue-.*|x-brevo-.*|x-cmae-.*"
    r"|x-ibm-.*campaign.*|x-listmember|x-bulkmail|x-mass-mail)$",
    re.I,
)
# The letters `_ESP_HEADER` can start with (case-insensitively no other character matches x or f).
_ESP_FIRST = frozenset("xXfF")
_NO_REPLY = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|noreply[-_.+].*|no[-_.]reply[-_.+].*"
    r"|.*[-_.+]no[-_.]?reply)$",
    re.I,
)


# --- the classifier ----------------------------------------------------------------------------


def classify(message: MailMessage, own: OwnMail = OwnMail()) -> Classification:
    """The kind of `message`, the reasons for it, and for bounces the delivery status."""
    shape = _shape(message)
    for rule in (_own_loop, _bounce, _feedback, _auto_reply, _bulk):
        found = rule(message, own, shape)
        if found is not None:
            return found
    return Classification("human", ())


@dataclass(frozen=True, slots=True)
class _Shape:
    """The top-level media type (lower-case), its report-type parameter and the media types of
    the parts: three rules read them, each computed once."""

    media: str
    report_type: str | None
    parts: frozenset[str]


def _shape(message: MailMessage) -> _Shape:
    media, report_type = _content_type(message)
    return _Shape(media, report_type, frozenset(_part_types(message)))


def _reason(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())[:MAX_REASON]


def _content_type(message: MailMessage) -> tuple[str, str | None]:
    """The top-level media type (lower-case) and its report-type parameter."""
    value = message.header("Content-Type") or ""
    media = value.split(";", 1)[0].strip().lower()
    found = _REPORT_TYPE.search(value)
    return media, found.group(1).lower() if found else None


def _part_types(message: MailMessage) -> set[str]:
    return {a.content_type.lower() for a in message.attachments}


def _null_return_path(message: MailMessage) -> bool:
    values = message.header_all("Return-Path")
    if not values:
        return False
    value = values[-1].strip()
    return value in {"", "<>", "<null>", "<MAILER-DAEMON>"} or value.lower() == "<mailer-daemon>"


def _daemon_sender(message: MailMessage) -> str | None:
    """Why the sender looks like a mail system, or None."""
    for party in (message.from_, message.sender):
        if party is None:
            continue
        local = party.email.split("@", 1)[0]
        if _DAEMON_LOCAL.match(local):
            return f"sender {local.lower()}"
        if party.name and _DAEMON_NAME.search(party.name):
            return "sender name of a mail system"
        if party.name.strip().lower() == "microsoft outlook" and local.lower() == "postmaster":
            return "sender Microsoft Outlook"
    raw_from = message.header("From") or ""
    if _DAEMON_FROM.search(raw_from):
        return "sender mailer-daemon"
    return None


# --- 1. own loop -------------------------------------------------------------------------------


def _own_loop(message: MailMessage, own: OwnMail, _shape: _Shape) -> Classification | None:
    reasons: list[str] = []
    if own.loop_header and message.header(own.loop_header) is not None:
        reasons.append(f"{own.loop_header} present")
    addresses = {a.lower() for a in own.addresses}
    if addresses:
        for value in message.header_all("X-Loop"):
            if addresses & {m.lower().strip(".") for m in _LOOP_ADDRESS.findall(value)}:
                reasons.append("X-Loop names our address")
                break
    domains = {d.lower() for d in own.message_id_domains}
    if domains and message.message_id and "@" in message.message_id:
        domain = message.message_id.rsplit("@", 1)[1].strip().lower()
        from_ = message.from_.email.lower() if message.from_ else ""
        if domain in domains and from_ in addresses:
            reasons.append("Message-ID domain and From are ours")
    return Classification("own_loop", tuple(reasons)) if reasons else None


# --- 2. bounce ---------------------------------------------------------------------------------


def _bounce(message: MailMessage, _own: OwnMail, shape: _Shape) -> Classification | None:
    reasons = _bounce_reasons(message, shape)
    if not reasons:
        return None
    return Classification("bounce", tuple(reasons), extract_dsn(message))


def _bounce_reasons(message: MailMessage, shape: _Shape) -> list[str]:
    media, report_type, parts = shape.media, shape.report_type, shape.parts
    if report_type in {"feedback-report", "disposition-notification"}:
        return []
    if "message/feedback-report" in parts or "message/disposition-notification" in parts:
        return []
    reasons: list[str] = []
    if report_type == "delivery-status":
        reasons.append("Content-Type: multipart/report; report-type=delivery-status")
    elif media == "multipart/report":
        reasons.append("Content-Type: multipart/report")
    if media == "message/delivery-status" or parts & {
        "message/delivery-status",
        "message/global-delivery-status",
    }:
        reasons.append("message/delivery-status part")
    if message.header("X-Failed-Recipients") is not None:
        reasons.append("X-Failed-Recipients present")
    subject = message.subject or ""
    subject_match = _BOUNCE_SUBJECT.search(subject)
    if subject_match:
        reasons.append(_reason(f"Subject: bounce pattern {subject_match.group(0).strip()!r}"))
    if reasons:
        return reasons

    # Weaker evidence, only together: a mail system or null sender, and bounce words.
    sender = _daemon_sender(message)
    null_sender = _null_return_path(message)
    no_from = message.from_ is None
    if not (sender or null_sender or no_from):
        return []
    body = _bounce_body_phrase(message)
    words = _BOUNCE_SUBJECT_WORDS.search(subject) if not _REPLY_PREFIX.match(subject) else None
    if body is None and (words is None or not sender):
        return []
    if sender:
        reasons.append(sender)
    if null_sender:
        reasons.append("Return-Path: <>")
    if no_from:
        reasons.append("no From")
    if body is not None:
        reasons.append(_reason(f"body: bounce phrase {body!r}"))
    if words is not None:
        reasons.append(_reason(f"Subject: bounce word {words.group(0)!r}"))
    return reasons


def _bounce_body_phrase(message: MailMessage) -> str | None:
    found = _BOUNCE_BODY.search(message.text[:_BODY_HEAD])
    return found.group(0).lower() if found else None


# --- 3. feedback -------------------------------------------------------------------------------


# Every header `_feedback` reads (lower-cased): a mail with none of them skips the lookups.
_FEEDBACK_HEADERS = frozenset({"feedback-type", "x-abuse-report", "x-arf", "x-apple-unsubscribe"})


def _feedback(message: MailMessage, _own: OwnMail, shape: _Shape) -> Classification | None:
    reasons: list[str] = []
    if shape.report_type == "feedback-report":
        reasons.append("Content-Type: multipart/report; report-type=feedback-report")
    if "message/feedback-report" in shape.parts:
        reasons.append("message/feedback-report part")
    if message.has_header(_FEEDBACK_HEADERS):
        feedback_type = message.header("Feedback-Type")
        if feedback_type is not None:
            reasons.append(_reason(f"Feedback-Type: {feedback_type}"))
        if message.header("X-Abuse-Report") is not None or message.header("X-ARF") is not None:
            reasons.append("abuse report header")
        if (message.header("X-Apple-Unsubscribe") or "").strip().lower() == "true":
            reasons.append("X-Apple-Unsubscribe: true (unsubscribe request)")
    if "message/rfc822" in shape.parts and b"X-HmXmrOriginalRecipient:" in message.raw:
        reasons.append("Hotmail complaint (X-HmXmrOriginalRecipient)")
    return Classification("feedback", tuple(reasons)) if reasons else None


# --- 4. auto-reply -----------------------------------------------------------------------------


def _has_list_headers(message: MailMessage) -> bool:
    return message.has_header(_LIST_NAMES)


_AUTO_FLAGS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply")
_EXCHANGE_AUTO = ("X-MS-Exchange-Inbox-Rules-Loop", "X-MS-Exchange-Generated-Message-Source")
# Every header `_auto_reply` reads before the subject (lower-cased): a mail with none of them
# skips the lookups.
_AUTO_HEADERS = frozenset(
    name.lower()
    for name in ("Auto-Submitted", *_AUTO_FLAGS, "Precedence", *_EXCHANGE_AUTO, "X-Apple-Action")
)


def _auto_reply(message: MailMessage, _own: OwnMail, shape: _Shape) -> Classification | None:
    reasons: list[str] = _auto_headers(message) if message.has_header(_AUTO_HEADERS) else []
    if (
        shape.report_type == "disposition-notification"
        or "message/disposition-notification" in shape.parts
    ):
        reasons.append("read receipt (disposition-notification)")
    subject = message.subject or ""
    prefix = _AUTO_PREFIX.match(subject)
    if prefix:
        reasons.append(_reason(f"Subject: auto-reply prefix {prefix.group(0).strip()!r}"))
    elif not reasons:
        hint = _AUTO_HINT.match(subject)
        weak = _weak_auto_signal(message) if hint else None
        if hint and weak:
            reasons.append(_reason(f"Subject: absence phrase {hint.group(0).strip()!r}"))
            reasons.append(weak)
    return Classification("auto_reply", tuple(reasons)) if reasons else None


def _auto_headers(message: MailMessage) -> list[str]:
    """The auto-reply signs among the headers (`_AUTO_HEADERS`)."""
    reasons: list[str] = []
    auto_submitted = message.header("Auto-Submitted")
    if auto_submitted is not None:
        submitted = auto_submitted.split(";", 1)[0].strip().lower()
        # auto-generated mail sent through a list is a notification: bulk decides.
        notification = submitted == "auto-generated" and _has_list_headers(message)
        if submitted and submitted != "no" and not notification:
            reasons.append(_reason(f"Auto-Submitted: {submitted}"))
    for name in _AUTO_FLAGS:
        value = message.header(name)
        if value is not None and value.strip().lower() not in {"no", "false", "0"}:
            reasons.append(f"{name} present")
    precedence = (message.header("Precedence") or "").strip().lower()
    if precedence in {"auto_reply", "auto-reply", "autoreply"}:
        reasons.append(_reason(f"Precedence: {precedence}"))
    for name in _EXCHANGE_AUTO:
        if message.header(name) is not None:
            reasons.append(f"{name} present")
    if (message.header("X-Apple-Action") or "").strip().upper() == "VACATION":
        reasons.append("X-Apple-Action: VACATION")
    return reasons


def _weak_auto_signal(message: MailMessage) -> str | None:
    """A header that alone proves nothing but backs up an auto-reply subject."""
    if _null_return_path(message):
        return "Return-Path: <>"
    precedence = (message.header("Precedence") or "").strip().lower()
    if precedence in {"bulk", "junk", "list"}:
        return _reason(f"Precedence: {precedence}")
    for name in ("X-Mailer", "User-Agent"):
        agent = message.header(name) or ""
        if _AUTORESPONDER_AGENT.search(agent):
            return _reason(f"{name} names an autoresponder")
    if message.header("X-Auto-Response-Suppress") is not None and _no_reply_sender(message):
        return "X-Auto-Response-Suppress from a no-reply sender"
    return None


# --- 5. bulk -----------------------------------------------------------------------------------


def _no_reply_sender(message: MailMessage) -> str | None:
    for party in (message.from_, message.sender, *message.reply_to):
        if party is not None:
            local = party.email.split("@", 1)[0]
            if _NO_REPLY.match(local):
                return _reason(f"no-reply sender {local.lower()}")
    return None


def _bulk(message: MailMessage, _own: OwnMail, _shape: _Shape) -> Classification | None:
    reasons: list[str] = []
    if message.has_header(_LIST_NAMES):
        reasons += [f"{name} present" for name in _LIST_HEADERS if message.header(name)]
    precedence = (message.header("Precedence") or "").strip().lower()
    if precedence in {"bulk", "list", "junk"}:
        reasons.append(f"Precedence: {precedence}")
    seen: set[str] = set()
    for name, _value in message.headers:
        if name[:1] not in _ESP_FIRST:
            continue  # every campaign header starts with x- or feedback-id
        lowered = name.lower()
        if lowered not in seen and _ESP_HEADER.match(name):
            seen.add(lowered)
            reasons.append(_reason(f"{name} present"))
    no_reply = _no_reply_sender(message)
    if no_reply:
        reasons.append(no_reply)
    auto_submitted = (message.header("Auto-Submitted") or "").strip().lower()
    if auto_submitted.startswith("auto-generated") and reasons:
        reasons.append("Auto-Submitted: auto-generated")
    return Classification("bulk", tuple(reasons)) if reasons else None
