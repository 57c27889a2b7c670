"""Outbound mail, the pure part: compose a message safely and decide whether an automatic one
may go at all.

- Every header value is checked: CR, LF or NUL in a subject, name or address is refused
  (header injection), never silently cleaned; addresses must parse as one plain address.
- Automatic mail (acknowledgements, rejections, forwards) carries `Auto-Submitted:
  auto-replied` (RFC 3834) and `X-Auto-Response-Suppress: All` (what Exchange honours), so
  other robots do not answer it.
- RFC 3834 section 2: never auto-answer mail that is auto-submitted, from a list or bulk
  sender, from a no-reply or mailer-daemon address, or from our own addresses; and at most
  `per_window` automatic mails to one recipient in `window_minutes`, `per_day` in a day, so two
  systems that strip those headers still stop.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

MAX_HEADER = 998  # RFC 5322's line limit, and a sane bound for one value
NO_REPLY = re.compile(
    r"^(no-?reply|do-?not-?reply|mailer-daemon|postmaster|bounces?|notifications?)([+.\-_].*)?$",
    re.IGNORECASE,
)


class OutboundError(ValueError):
    """This mail is refused before it is sent: the reason says why (shown to API callers)."""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Draft:
    """A mail to send, every value still to be checked."""

    sender: str
    to: tuple[str, ...]
    subject: str
    body: str
    message_id: str  # without angle brackets
    date: datetime
    sender_name: str = ""
    cc: tuple[str, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    automatic: bool = False
    ref_header: str | None = None  # X-Mailfiler-Ref
    attachments: tuple[Attachment, ...] = field(default=())


def check_text(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise OutboundError(f"{name} contains a line break or NUL (header injection refused)")
    if len(value) > MAX_HEADER:
        raise OutboundError(f"{name} is longer than {MAX_HEADER} characters")
    return value


def check_address(value: str, what: str = "address") -> str:
    """One plain address (`user@example.com`), lower-cased domain; anything else refused."""
    check_text(what, value)
    address = parseaddr(value)[1]
    written = value.strip()
    if not address or not (written == address or written.endswith(f"<{address}>")):
        raise OutboundError(f"{what} {value!r} is not one address")
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise OutboundError(f"{what} {value!r} is not a valid address")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise OutboundError(f"{what} {value!r} has an invalid domain") from exc
    if not re.fullmatch(r"[A-Za-z0-9.-]+", ascii_domain):
        raise OutboundError(f"{what} {value!r} has an invalid domain")
    return f"{local}@{domain.lower()}"


def compose(draft: Draft, max_bytes: int) -> bytes:
    """The message as bytes for SMTP (CRLF), or OutboundError."""
    if not draft.to:
        raise OutboundError("no recipient")
    message = EmailMessage(policy=SMTP)
    sender = check_address(draft.sender, "from")
    local, _, domain = sender.rpartition("@")
    message["From"] = Address(check_text("sender name", draft.sender_name), local, domain)
    message["To"] = ", ".join(check_address(a, "to") for a in draft.to)
    if draft.cc:
        message["Cc"] = ", ".join(check_address(a, "cc") for a in draft.cc)
    message["Subject"] = check_text("subject", draft.subject)
    message["Date"] = format_datetime(draft.date)
    message["Message-ID"] = f"<{check_text('message id', draft.message_id)}>"
    if draft.in_reply_to:
        message["In-Reply-To"] = f"<{check_text('in-reply-to', draft.in_reply_to)}>"
    references = [check_text("references", r) for r in draft.references]
    if references:
        message["References"] = " ".join(f"<{r}>" for r in references[-20:])
    if draft.automatic:
        message["Auto-Submitted"] = "auto-replied"
        message["X-Auto-Response-Suppress"] = "All"
        message["Precedence"] = "auto_reply"
    if draft.ref_header:
        message["X-Mailfiler-Ref"] = check_text("ref", draft.ref_header)
    if "\x00" in draft.body:
        raise OutboundError("the body contains NUL")
    message.set_content(draft.body, subtype="plain", charset="utf-8")
    for item in draft.attachments:
        maintype, _, subtype = item.content_type.partition("/")
        if item.content_type == "message/rfc822":  # a forward: the original, as it came
            original = message_from_bytes(item.data, policy=SMTP)
            message.add_attachment(original, filename=check_text("attachment name", item.filename))
            continue
        message.add_attachment(
            item.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=check_text("attachment name", item.filename),
        )
    raw = message.as_bytes()
    if len(raw) > max_bytes:
        raise OutboundError(f"the mail is {len(raw)} bytes; the limit is {max_bytes}")
    return raw


def render(template: str, values: Mapping[str, str]) -> str:
    """`$name` / `${name}` placeholders (string.Template); unknown ones stay as written."""
    return string.Template(template).safe_substitute(values)


def one_line(value: str) -> str:
    """A value for a header built from mail text: line breaks become spaces."""
    return " ".join(value.split())


def refusal(
    to: str, headers: Mapping[str, str], own: Iterable[str], message_kind: str = "human"
) -> str | None:
    """Why an automatic mail must not answer this (RFC 3834), or None."""
    if message_kind != "human":
        return f"the mail is {message_kind.replace('_', ' ')}: never answered automatically"
    lowered = {k.lower(): v for k, v in headers.items()}
    auto = lowered.get("auto-submitted", "").strip().lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    if lowered.get("precedence", "").strip().lower() in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {lowered['precedence'].strip()}"
    if "list-id" in lowered or "list-unsubscribe" in lowered:
        return "mail from a mailing list"
    if (
        "x-auto-response-suppress" in lowered
        and "all" in lowered["x-auto-response-suppress"].lower()
    ):
        return "X-Auto-Response-Suppress: All"
    address = parseaddr(to)[1].lower()
    if NO_REPLY.match(address.partition("@")[0]):
        return f"{address} is a no-reply or system address"
    if address in {a.lower() for a in own}:
        return f"{address} is our own address"
    return None


@dataclass(frozen=True)
class Limits:
    window_minutes: int = 180
    per_window: int = 10
    per_day: int = 40


def over_limit(sent: Sequence[datetime], now: datetime, limits: Limits) -> str | None:
    """`sent`: when automatic mail went to this recipient before (any order)."""
    window = now - timedelta(minutes=limits.window_minutes)
    recent = sum(1 for t in sent if t > window)
    if recent >= limits.per_window:
        return f"{recent} automatic mails in {limits.window_minutes} minutes (limit)"
    day = sum(1 for t in sent if t > now - timedelta(days=1))
    if day >= limits.per_day:
        return f"{day} automatic mails in a day (limit)"
    return None
