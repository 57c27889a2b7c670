"""Delivery-status of a bounce: what failed, for whom, why, and which of our mails it was.

`extract_dsn` reads an RFC 3464 ``message/delivery-status`` part when there is one and infers
the same fields from the human-readable text of everything else (qmail, Exim, Exchange 2003,
Gmail's old text bounces, ...). It never raises: the raw mail is re-parsed with `compat32`
inside a ``try``, and every field it cannot find stays None.

Where each field comes from, first hit wins:

* ``action``: the recipient block's ``Action``; else ``delayed`` when the status is 4.x.x or
  the subject/text speaks of a delay, else ``failed``;
* ``status``: the recipient block's ``Status``; else the enhanced code (``5.1.1``,
  ``#5.1.1``, ``550 5.1.1``) in the Diagnostic-Code or the failure section of the text; else a
  keyword table ("user unknown" -> 5.1.1, "mailbox full"/"quota" -> 5.2.2, ...); else a
  basic SMTP reply code (``550`` -> 5.0.0, ``451`` -> 4.0.0);
* ``final_recipient``: ``Final-Recipient``, then ``Original-Recipient``, then
  ``X-Failed-Recipients``, then the first address in the failure section that is not the
  bounce's own sender, recipient or a mailer-daemon/postmaster;
* ``original_message_id``: the Message-ID of the attached ``message/rfc822`` or
  ``text/rfc822-headers`` part; else ``X-Original-Message-ID``-style headers, In-Reply-To,
  References; else a ``Message-ID:`` line in the body text (the returned copy);
* ``diagnostic``: ``Diagnostic-Code`` without its type prefix, else the text line the status
  came from; whitespace collapsed, at most 500 characters.

The *failure section* is the text before the returned copy of the original mail ("--- Below
this line is a copy of the message", "------ This is a copy of the message", "Original
message", a first ``Received:`` line, ...), so that addresses and codes of the original mail
are not mistaken for the failure.
"""

from __future__ import annotations

import binascii
import quopri
import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import HeaderParser

from shared.core.message import MailMessage
from shared.core.mimetree import parse_tree

MAX_DIAGNOSTIC = 500
MAX_TEXT = 100_000  # characters of body text searched; bounces put the failure first
MAX_WALK = 200  # MIME parts looked at


@dataclass(frozen=True, slots=True)
class Dsn:
    """Delivery-status of a bounce (RFC 3464), or what could be inferred from its text."""

    action: str | None
    status: str | None
    final_recipient: str | None
    original_message_id: str | None
    diagnostic: str | None

    @property
    def permanent(self) -> bool:
        """A permanent failure: status 5.x.x, or action ``failed`` when there is no status."""
        if self.status:
            return self.status.startswith("5")
        return self.action == "failed"


_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_STATUS_FIELD = re.compile(r"^\s*status:\s*#?([245]\.\d{1,3}\.\d{1,3})", re.I | re.M)
_BASIC_CODE = re.compile(r"(?<![\d.#:/-])([45])([0-5])(\d)(?=[ -])(?![ -]?\d)")
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
_BODY_MESSAGE_ID = re.compile(
    r"^[ \t>]*Message-ID:[ \t]*<?([^\s<>]+@[^\s<>]+?)>?[ \t]*$", re.I | re.M
)
_FIELD_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_WHITESPACE = re.compile(r"\s+")
_LINE_END = re.compile(r"\r\n|\r")
_FINAL_RECIPIENT_TEXT = re.compile(
    r"^\s*(?:final|original)-recipient:\s*(?:[a-z0-9-]+\s*;)?\s*<?([^\s<>;]+@[^\s<>;]+?)>?\s*$",
    re.I | re.M,
)
_ACTION_TEXT = re.compile(
    r"^\s*action:\s*(failed|delayed|delivered|relayed|expanded)\b", re.I | re.M
)
_DIAGNOSTIC_TEXT = re.compile(r"^\s*diagnostic-code:\s*(.+)$", re.I | re.M)

# Where the returned copy of the original mail starts, in the texts of the mail systems
# we know; everything before it is the failure section.
_COPY_MARKERS = re.compile(
    r"^(?:.*(?:"
    r"below this line is a copy of the message"
    r"|this is a copy of the message"
    r"|original message follows"
    r"|-{2,}\s*original message\s*-{2,}"
    r"|message headers follow"
    r"|the headers of your message"
    r"|returned message"
    r"|-{3,}\s*the header of the original message"
    r"|undelivered message headers"
    r"|original message headers"
    r"|-{3,} ?(?:begin|start) (?:of )?(?:returned|original) message"
    r").*|received: .*|return-path: .*)$",
    re.I | re.M,
)
_DELAY_TEXT = re.compile(
    r"\bdelay(?:ed)?\b|still being retried|will (?:continue to )?(?:be )?retr(?:y|ied)"
    r"|has not yet been delivered|not yet been delivered|deferred|could not send message for"
    r"|warning: could not send|could not send (?:mail|message)|warning message only"
    r"|warning only|keep trying|has not (?:yet )?been (?:sent|delivered)|hasn't been delivered"
    r"|not been sent yet|temporary problem|delivery incomplete|could not deliver it at this time",
    re.I,
)
# Reason words -> the subject.detail of an enhanced status, for bounces that give no code;
# the class is 4 for a delay notice, else 5.
_KEYWORD_STATUS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"user unknown|unknown user|no such user|user not found|no such (?:mail)?box"
            r"|mailbox (?:unavailable|not found|does not exist)|recipient not found"
            r"|unknown recipient|invalid recipient|recipient (?:address )?rejected"
            r"|address (?:does not exist|rejected|unknown)|(?:does|may) not exist"
            r"|not a valid (?:user|mailbox)|no mailbox"
            r"|account (?:has been )?(?:disabled|closed|deleted)"
            r"|is not a member|are not (?:a )?member|not listed in|unrouteable address"
            r"|unknown local part|recipient unknown|no longer (?:active|valid|in use)"
            r"|invalid mailbox|user doesn't have|invalid (?:final delivery )?userid"
            r"|no valid recipients|recipient not found",
            re.I,
        ),
        "1.1",
    ),
    (
        re.compile(
            r"(?:mailbox|mail ?folder|inbox) (?:is )?full|over ?quota|quota (?:exceeded|full)"
            r"|exceeded (?:its|the|their) (?:storage|quota)"
            r"|insufficient (?:disk )?(?:space|storage)"
            r"|mailbox size limit|\bquota\b",
            re.I,
        ),
        "2.2",
    ),
    (
        re.compile(
            r"host (?:or domain name )?not found|host \S+ not found|host unknown|unknown host"
            r"|no mx|domain (?:name )?not found|name service error|no such domain"
            r"|domain (?:does not exist|unknown)|unrouteable (?:mail )?domain|mx lookup failed",
            re.I,
        ),
        "1.2",
    ),
    (
        re.compile(r"message (?:is )?too (?:large|big)|size limit|exceeds? .{0,30}size", re.I),
        "3.4",
    ),
    (
        re.compile(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted)|not permitted to relay", re.I
        ),
        "7.1",
    ),
    (
        re.compile(
            r"\bspam\b|blacklist|blocklist|block(?:ed)? (?:by|for|using)"
            r"|policy (?:reasons|violation)"
            r"|access denied|rejected for policy|content (?:filter|rejected)|dmarc|virus"
            r"|permission to post",
            re.I,
        ),
        "7.1",
    ),
    (
        re.compile(
            r"retry timeout exceeded|envelope expired|in the queue too long|message expired"
            r"|could not send (?:message|mail) for|too long in queue|delivery time expired",
            re.I,
        ),
        "4.7",
    ),
    (
        re.compile(
            r"requests to connect|unable to connect|connection\s+(?:refused|timed\s+out)"
            r"|operation timed out|socket error|no route to host|no answer from host",
            re.I,
        ),
        "4.1",
    ),
)
_ORIGINAL_ID_HEADERS = (
    "X-Original-Message-ID",
    "X-Original-Message-Id",
    "Original-Message-ID",
    "X-MS-Exchange-Original-Message-ID",
)
_DAEMON_LOCALPARTS = re.compile(
    r"^(?:mailer-daemon|postmaster|poostmaster|mail-daemon|mdaemon|root|abuse|noreply|no-reply"
    r"|bounce[s]?|mail\.delivery\.system)$",
    re.I,
)


def extract_dsn(message: MailMessage) -> Dsn:
    """The delivery status of the bounce `message`; fields it cannot find are None."""
    blocks: list[dict[str, str]] = []
    texts: list[str] = []
    original_id: str | None = None
    try:
        blocks, texts, original_id = _walk_raw(message.raw)
    except Exception:  # a broken mail must not stop the mailbox
        blocks, texts, original_id = [], [], None
    if not texts and message.text:
        texts = [message.text]
    text = "\n".join(texts)[:MAX_TEXT]
    failure = _failure_section(text)

    recipient = _recipient_block(blocks)
    action = _clean_action(recipient.get("action"))
    status = _clean_status(recipient.get("status"))
    final = _clean_address(recipient.get("final-recipient")) or _clean_address(
        recipient.get("original-recipient")
    )
    diagnostic = _clean_diagnostic(recipient.get("diagnostic-code"))

    # A generic X.0.0 status says less than the code the remote server gave.
    if status and status.endswith(".0.0") and diagnostic:
        specific = _clean_status(diagnostic)
        if specific and specific[0] == status[0] and not specific.endswith(".0.0"):
            status = specific

    # Delivery-status fields written into the body text (no MIME part for them).
    if status is None:
        found = _STATUS_FIELD.search(failure) or _STATUS_FIELD.search(text)
        if found:
            status = _clean_status(found.group(1))
    if action is None:
        found_action = _ACTION_TEXT.search(text)
        if found_action:
            action = found_action.group(1).lower()
    if final is None:
        found_final = _FINAL_RECIPIENT_TEXT.search(text)
        if found_final:
            final = _clean_address(found_final.group(1))
    if diagnostic is None:
        found_diag = _DIAGNOSTIC_TEXT.search(text)
        if found_diag:
            diagnostic = _clean_diagnostic(found_diag.group(1))

    if final is None:
        for value in message.header_all("X-Failed-Recipients"):
            final = _clean_address(value.split(",")[0])
            if final:
                break
    if final is None:
        final = _first_foreign_address(failure, message)

    delay_hint = bool(_DELAY_TEXT.search(message.subject) or _DELAY_TEXT.search(failure[:2000]))
    if status is None:
        status, line = _infer_status(diagnostic or "", failure, "4" if delay_hint else "5")
        if diagnostic is None and line:
            diagnostic = _clean_diagnostic(line)

    if action is None:
        delayed = (status or "").startswith("4") or delay_hint
        action = "delayed" if delayed else "failed"

    if original_id is None:
        original_id = _original_id_from_headers(message)
    if original_id is None:
        original_id = _original_id_from_text(text, message.message_id)

    return Dsn(
        action=action,
        status=status,
        final_recipient=final,
        original_message_id=original_id,
        diagnostic=diagnostic,
    )


# --- the raw MIME tree -------------------------------------------------------------------------


def _walk_raw(raw: bytes) -> tuple[list[dict[str, str]], list[str], str | None]:
    """Delivery-status blocks, body texts (outside message/* parts) and the attached
    original's Message-ID, from the raw bytes."""
    root = parse_tree(raw)
    blocks: list[dict[str, str]] = []
    texts: list[str] = []
    original_id: str | None = None
    stack: list[Message] = [root]
    seen = 0
    while stack and seen < MAX_WALK:
        part = stack.pop(0)
        seen += 1
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype in {"message/delivery-status", "message/global-delivery-status"}:
            blocks.extend(_status_blocks(part, payload))
        elif ctype in {"message/rfc822", "message/global"}:
            if original_id is None and isinstance(payload, list) and payload:
                inner = payload[0]
                if isinstance(inner, Message):
                    original_id = _message_id_of(inner)
        elif ctype in {"text/rfc822-headers", "message/rfc822-headers", "text/rfc822-header"}:
            if original_id is None:
                headers = HeaderParser(policy=policy.compat32).parsestr(_part_text(part))
                original_id = _message_id_of(headers)
        elif part.is_multipart() and isinstance(payload, list):
            stack[:0] = [p for p in payload if isinstance(p, Message)]
        elif ctype.startswith("text/") and part.get_filename() is None:
            body = _part_text(part)
            if ctype == "text/html":
                body = re.sub(r"<[^>]{0,2000}>", " ", body)
            if body.strip():
                texts.append(body)
    return blocks, texts, original_id


def _status_blocks(part: Message, payload: object) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, keys lower-cased, values unfolded."""
    if isinstance(payload, list):
        blocks: list[dict[str, str]] = []
        for block in payload:
            if isinstance(block, Message):
                fields: dict[str, str] = {}
                for key, value in block.items():
                    fields.setdefault(key.strip().lower(), _unfold(str(value)))
                if fields:
                    blocks.append(fields)
        # A body that did not parse as headers (base64, junk before the first field) gives
        # empty blocks: read it as text instead.
        if any(("status" in b or "action" in b or "final-recipient" in b) for b in blocks):
            return blocks
    return _blocks_from_text(_part_text(part))


def _blocks_from_text(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] = _unfold(current[last] + " " + line)
            continue
        match = _FIELD_LINE.match(line)
        if match:
            last = match.group(1).lower()
            current.setdefault(last, match.group(2).strip())
    if current:
        blocks.append(current)
    return blocks


def _part_text(part: Message) -> str:
    """The decoded text of a leaf part (or of a parsed sub-message list, re-serialised and
    decoded when its transfer encoding hid the fields from the parser), line ends ``\n``."""
    payload = part.get_payload()
    if isinstance(payload, list):
        text = "\n\n".join(p.as_string() for p in payload if isinstance(p, Message))
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        data: bytes | None = None
        if encoding == "base64":
            try:
                data = binascii.a2b_base64("".join(text.split()).encode("ascii", "ignore"))
            except (binascii.Error, ValueError):
                data = None
        elif encoding == "quoted-printable":
            data = quopri.decodestring(text.encode("utf-8", "surrogateescape"))
        if data is not None:
            text = data.decode("utf-8", "replace")
        return _LINE_END.sub("\n", text)
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return _LINE_END.sub("\n", str(payload))
    charset = part.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset, "replace")
    except LookupError:
        text = raw.decode("utf-8", "replace")
    return _LINE_END.sub("\n", text)


def _message_id_of(headers: Message) -> str | None:
    # The stored value, not get(): compat32 turns undecodable bytes into "?" there, and an
    # RFC 6532 id (UTF-8 after the @) must read as the map stage keys the original.
    for name, value in headers.raw_items():
        if name.strip().lower() == "message-id":
            return _clean_id(_utf8(str(value)))
    return None


def _utf8(value: str) -> str:
    """A header value parsed from bytes holds its non-ASCII bytes as surrogates: UTF-8 again."""
    try:
        return value.encode("ascii", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return value


# --- field cleaning ----------------------------------------------------------------------------


def _recipient_block(blocks: list[dict[str, str]]) -> dict[str, str]:
    """The per-recipient block to report: the first failed one, else the first with a field."""
    candidates = [b for b in blocks if "final-recipient" in b or "action" in b or "status" in b]
    for block in candidates:
        if (block.get("action") or "").strip().lower().startswith("failed"):
            return block
    for block in candidates:
        if "status" in block:
            return block
    return candidates[0] if candidates else {}


def _unfold(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


def _clean_action(value: str | None) -> str | None:
    if not value:
        return None
    word = value.strip().split(" ")[0].strip(" ;,.()").lower()
    return word if word in {"failed", "delayed", "delivered", "relayed", "expanded"} else None


def _clean_status(value: str | None) -> str | None:
    if not value:
        return None
    match = _STATUS.search(value)
    if not match:
        return None
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}"


def _clean_address(value: str | None) -> str | None:
    """``rfc822; <User@Example.com>`` -> ``user@example.com``."""
    if not value:
        return None
    text = value.split(";", 1)[1] if ";" in value else value
    match = _ADDRESS.search(text)
    if not match:
        return None
    return match.group(0).strip(".'`").lower()


def _clean_diagnostic(value: str | None) -> str | None:
    if not value:
        return None
    text = _unfold(value)
    if re.match(r"^[A-Za-z0-9-]{1,20}\s*;", text):
        text = text.split(";", 1)[1].strip()
    return text[:MAX_DIAGNOSTIC] or None


def _clean_id(value: str) -> str | None:
    match = _ANGLE_ID.search(value)
    text = (match.group(1) if match else value).strip()
    if not text or " " in text:
        return None
    return text


# --- inference from text -----------------------------------------------------------------------


def _failure_section(text: str) -> str:
    match = _COPY_MARKERS.search(text)
    return text[: match.start()] if match and match.start() > 0 else text[:20_000]


def _infer_status(diagnostic: str, failure: str, klass: str) -> tuple[str | None, str | None]:
    """An enhanced status code from the diagnostic or the failure text, and its line; a code
    inferred from words gets class `klass`."""
    for source in (diagnostic, failure):
        for line in source.splitlines() or [source]:
            found = _STATUS.search(line)
            if found:
                return _clean_status(found.group(0)), line
    for source in (diagnostic, failure):
        for pattern, status in _KEYWORD_STATUS:
            keyword = pattern.search(source)
            if keyword:
                return f"{klass}.{status}", _line_around(source, keyword.start())
    for source in (diagnostic, failure):
        basic = _BASIC_CODE.search(source)
        if basic:
            return f"{basic.group(1)}.0.0", _line_around(source, basic.start())
    return None, None


def _line_around(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start : end if end >= 0 else len(text)]


def _first_foreign_address(failure: str, message: MailMessage) -> str | None:
    """The first address in the failure text that is not the bounce's own party."""
    own = {a.email.lower() for a in (*message.to, *message.cc, *message.reply_to)}
    for party in (message.from_, message.sender):
        if party is not None:
            own.add(party.email.lower())
    for match in _ADDRESS.finditer(failure[:20_000]):
        address = match.group(0).strip(".'`").lower()
        local = address.split("@", 1)[0]
        if address in own or _DAEMON_LOCALPARTS.match(local):
            continue
        return address
    return None


def _original_id_from_headers(message: MailMessage) -> str | None:
    for name in _ORIGINAL_ID_HEADERS:
        value = message.header(name)
        if value:
            cleaned = _clean_id(value)
            if cleaned:
                return cleaned
    if message.in_reply_to:
        return message.in_reply_to[-1]
    if message.references:
        return message.references[-1]
    return None


def _original_id_from_text(text: str, own_id: str | None) -> str | None:
    for match in _BODY_MESSAGE_ID.finditer(text):
        value = match.group(1).strip()
        if value and value != own_id:
            return value
    return None
