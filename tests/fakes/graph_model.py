"""Data model of the fake Microsoft Graph: mail items, folders, events and their JSON shapes.

Shapes follow Microsoft's Graph v1.0 reference pages:
- message resource type (api-reference/v1.0/resources/message.md): id, internetMessageId, subject,
  from/sender/toRecipients/ccRecipients (recipient -> emailAddress {name, address}),
  receivedDateTime, sentDateTime, conversationId, conversationIndex, parentFolderId, categories,
  isRead, flag (followupFlag: flagStatus + dateTimeTimeZone start/due/completed), hasAttachments,
  bodyPreview, body (itemBody {contentType, content}), changeKey and "@odata.etag".
- mailFolder resource type: id, displayName, parentFolderId, childFolderCount, unreadItemCount,
  totalItemCount, isHidden.
- event resource type: start/end as dateTimeTimeZone, iCalUId, singleValueExtendedProperties
  ({id, value}, singleValueLegacyExtendedProperty).
- Errors: "Error responses and resource types" ({"error": {code, message, innerError}}).
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.utils
import hashlib
import html
import re
import secrets
import uuid
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from typing import Any

JSON = dict[str, Any]

WELL_KNOWN_FOLDERS: dict[str, str] = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "archive": "Archive",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "drafts": "Drafts",
}
ROOT = "msgfolderroot"
FLAG_STATUSES = ("notFlagged", "flagged", "complete")


class GraphError(Exception):
    """An error answer in Graph's documented shape: {"error": {"code", "message", "innerError"}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self, request_id: str, client_request_id: str | None = None) -> JSON:
        inner: JSON = {
            "date": utcnow().strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id,
            "client-request-id": client_request_id or request_id,
        }
        return {"error": {"code": self.code, "message": self.message, "innerError": inner}}


# --- time -----------------------------------------------------------------------------------------


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime) -> str:
    """DateTimeOffset as Graph writes it for mail: 2016-10-19T10:37:00Z."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso7(value: dt.datetime) -> str:
    """DateTimeOffset with 7 fraction digits, as in subscription.expirationDateTime."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def parse_datetime(text: str) -> dt.datetime:
    """Parse an ISO 8601 DateTimeOffset (Z or offset; up to 7 fraction digits); naive = UTC."""
    value = text.strip()
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", value)
    if not match:
        raise ValueError(f"not a DateTimeOffset: {text!r}")
    base, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    parsed = dt.datetime.fromisoformat(f"{base}.{micro}")
    if zone and zone != "Z":
        parsed = parsed.replace(tzinfo=dt.datetime.strptime(zone.replace(":", ""), "%z").tzinfo)
    else:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def dttz(value: dt.datetime | None) -> JSON | None:
    """dateTimeTimeZone resource type: {"dateTime": "2024-05-01T10:00:00.0000000", "timeZone"}."""
    if value is None:
        return None
    text = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"
    return {"dateTime": text, "timeZone": "UTC"}


def parse_dttz(value: Any) -> dt.datetime | None:
    """Read a dateTimeTimeZone object. UTC and IANA zone names are honoured."""
    if value is None:
        return None
    if not isinstance(value, dict) or "dateTime" not in value:
        raise GraphError(400, "BadRequest", "Expected a dateTimeTimeZone object.")
    parsed = parse_datetime(str(value["dateTime"]).rstrip("Z"))
    zone = str(value.get("timeZone") or "UTC")
    if zone.upper() not in {"UTC", "Z", "GMT"}:
        try:
            from zoneinfo import ZoneInfo

            parsed = parsed.replace(tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)
        except Exception as exc:  # Windows zone names are not mapped by the fake
            raise GraphError(
                400, "TimeZoneNotSupportedException", f"Unsupported time zone {zone!r}."
            ) from exc
    return parsed


# --- ids ------------------------------------------------------------------------------------------


def opaque_id(prefix: bytes, seed: str | None = None, size: int = 36) -> str:
    """An Exchange-looking REST id: URL-safe base64 of a prefix plus random (or hashed) bytes."""
    tail = hashlib.sha256(seed.encode()).digest()[:size] if seed else secrets.token_bytes(size)
    return base64.urlsafe_b64encode(prefix + tail).decode()


def immutable_message_id() -> str:
    # Immutable ids (Prefer: IdType="ImmutableId") start with AAkALg... in Exchange Online.
    return opaque_id(b"\x00\x09\x00\x2e\x00\x00\x00\x00\x00")


def folder_id() -> str:
    return opaque_id(b"\x00\x01\x2e\x00\x00\x00\x00\x00", size=30)


def new_guid() -> str:
    return str(uuid.uuid4())


def change_key(seq: int) -> str:
    return base64.b64encode(b"\x09\x00\x00\x00\x16\x00\x00\x00" + seq.to_bytes(8, "big")).decode()


# --- MIME -----------------------------------------------------------------------------------------


@dataclass
class ParsedMime:
    """What Graph derives from a message's MIME for the message resource."""

    subject: str
    internet_message_id: str
    from_: list[tuple[str, str]]
    sender: list[tuple[str, str]]
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    bcc: list[tuple[str, str]]
    reply_to: list[tuple[str, str]]
    sent: dt.datetime | None
    thread_root: str | None
    depth: int
    thread_index: str | None
    body_type: str
    body: str
    preview: str
    has_attachments: bool
    importance: str


def _decode(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    try:
        return str(make_header(decode_header(text)))
    except Exception:
        return text


def _addresses(msg: EmailMessage, name: str) -> list[tuple[str, str]]:
    raw = [_decode(v) for v in (msg.get_all(name) or [])]
    return [(n, a) for n, a in email.utils.getaddresses(raw) if a]


def _payload_text(part: EmailMessage) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _strip_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
    return html.unescape(re.sub(r"(?s)<[^>]+>", " ", text))


def parse_mime(raw: bytes) -> ParsedMime:
    """Parse with compat32 (it never crashes on Outlook-style headers) and decode by hand."""
    msg = email.message_from_bytes(raw)
    text_body: str | None = None
    html_body: str | None = None
    has_attachments = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        filename = part.get_filename()
        if disposition == "attachment" or (filename and disposition != "inline"):
            has_attachments = True
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and text_body is None:
            text_body = _payload_text(part)
        elif ctype == "text/html" and html_body is None:
            html_body = _payload_text(part)
    body_type, body = ("html", html_body) if html_body is not None else ("text", text_body or "")
    plain = text_body if text_body is not None else _strip_html(html_body or "")
    preview = " ".join(plain.split())[:255]

    message_id = (msg.get("Message-ID") or "").strip()
    refs = re.findall(r"<[^<>\s]+>", _decode(msg.get("References")))
    reply_to_id = re.findall(r"<[^<>\s]+>", _decode(msg.get("In-Reply-To")))
    root = refs[0] if refs else (reply_to_id[0] if reply_to_id else None)
    depth = len(refs) if refs else (1 if reply_to_id else 0)
    sent: dt.datetime | None = None
    if msg.get("Date"):
        try:
            sent = email.utils.parsedate_to_datetime(str(msg.get("Date")))
            if sent.tzinfo is None:
                sent = sent.replace(tzinfo=dt.UTC)
        except (TypeError, ValueError, IndexError):
            sent = None
    importance = {"1": "high", "2": "high", "4": "low", "5": "low"}.get(
        (msg.get("X-Priority") or "3").strip()[:1], "normal"
    )
    from_ = _addresses(msg, "From")
    return ParsedMime(
        subject=_decode(msg.get("Subject")),
        internet_message_id=message_id,
        from_=from_,
        sender=_addresses(msg, "Sender") or from_,
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        bcc=_addresses(msg, "Bcc"),
        reply_to=_addresses(msg, "Reply-To"),
        sent=sent,
        thread_root=root,
        depth=depth,
        thread_index=(msg.get("Thread-Index") or "").strip() or None,
        body_type=body_type,
        body=body,
        preview=preview,
        has_attachments=has_attachments,
        importance=importance,
    )


def conversation_id(root: str) -> str:
    """Same opaque conversationId for every message whose thread root Message-ID is ``root``."""
    digest = hashlib.sha256(root.strip().lower().encode()).digest()[:32]
    return base64.urlsafe_b64encode(b"\x00\x04\x24\x00" + digest).decode()


def conversation_index(root: str, depth: int, when: dt.datetime) -> str:
    """A 22-byte header (reserved byte, 5 bytes of FILETIME, 16-byte GUID) + 5 bytes per reply."""
    filetime = int((when - dt.datetime(1601, 1, 1, tzinfo=dt.UTC)).total_seconds() * 10**7)
    header = b"\x01" + filetime.to_bytes(8, "big")[:5]
    guid = hashlib.md5(root.strip().lower().encode(), usedforsecurity=False).digest()
    return base64.b64encode(header + guid + b"\x00" * 5 * depth).decode()


def recipient(pair: tuple[str, str]) -> JSON:
    """recipient resource type: {"emailAddress": {"name", "address"}}."""
    name, address = pair
    return {"emailAddress": {"name": name or address, "address": address}}


# --- entities -------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    key: str  # as given to add_user
    id: str  # the user's object id (a GUID), used in notification resources
    upn: str | None
    display_name: str
    tenant: str | None = None


@dataclass
class Folder:
    id: str
    user_id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None
    is_hidden: bool = False


@dataclass
class Flag:
    status: str = "notFlagged"
    start: dt.datetime | None = None
    due: dt.datetime | None = None
    completed: dt.datetime | None = None

    def to_json(self) -> JSON:
        out: JSON = {"flagStatus": self.status}
        for name, value in (
            ("startDateTime", self.start),
            ("dueDateTime", self.due),
            ("completedDateTime", self.completed),
        ):
            if value is not None:
                out[name] = dttz(value)
        return out


@dataclass
class Message:
    id: str
    user_id: str
    folder_id: str
    mime: bytes
    parsed: ParsedMime
    received: dt.datetime
    created: dt.datetime
    modified: dt.datetime
    seq: int
    folder_seq: int
    created_seq: int
    is_read: bool = False
    categories: list[str] = field(default_factory=list)
    flag: Flag = field(default_factory=Flag)
    importance: str = "normal"
    inference: str = "focused"
    subject_override: str | None = None
    conversation_id: str = ""
    conversation_index: str = ""

    @property
    def etag(self) -> str:
        return f'W/"{change_key(self.seq)}"'


MESSAGE_PROPERTIES = [
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "uniqueBody",
    "internetMessageHeaders",
]


def message_json(msg: Message, select: list[str] | None = None) -> JSON:
    """A message resource. With ``select`` only those properties (plus id and @odata.etag)."""
    p = msg.parsed
    full: JSON = {
        "@odata.etag": msg.etag,
        "id": msg.id,
        "createdDateTime": iso(msg.created),
        "lastModifiedDateTime": iso(msg.modified),
        "changeKey": change_key(msg.seq),
        "categories": list(msg.categories),
        "receivedDateTime": iso(msg.received),
        "sentDateTime": iso(p.sent or msg.received),
        "hasAttachments": p.has_attachments,
        "internetMessageId": p.internet_message_id,
        "subject": msg.subject_override if msg.subject_override is not None else p.subject,
        "bodyPreview": p.preview,
        "importance": msg.importance,
        "parentFolderId": msg.folder_id,
        "conversationId": msg.conversation_id,
        "conversationIndex": msg.conversation_index,
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": msg.is_read,
        "isDraft": False,
        "webLink": "https://outlook.office365.com/owa/?ItemID="
        + msg.id.replace("=", "%3D")
        + "&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": msg.inference,
        "body": {"contentType": p.body_type, "content": p.body},
        "sender": recipient(p.sender[0]) if p.sender else None,
        "from": recipient(p.from_[0]) if p.from_ else None,
        "toRecipients": [recipient(a) for a in p.to],
        "ccRecipients": [recipient(a) for a in p.cc],
        "bccRecipients": [recipient(a) for a in p.bcc],
        "replyTo": [recipient(a) for a in p.reply_to],
        "flag": msg.flag.to_json(),
    }
    if select is None:
        return full
    out: JSON = {"@odata.etag": msg.etag, "id": msg.id}
    for name in select:
        canonical = _canonical(name, MESSAGE_PROPERTIES, "message")
        if canonical in full:
            out[canonical] = full[canonical]
        elif canonical == "uniqueBody":
            out[canonical] = full["body"]
        elif canonical == "internetMessageHeaders":
            out[canonical] = _headers(msg.mime)
    return out


def _headers(raw: bytes) -> list[JSON]:
    parsed = email.message_from_bytes(raw)
    return [{"name": k, "value": _decode(v)} for k, v in parsed.items()]


def _canonical(name: str, known: list[str], type_name: str) -> str:
    for candidate in (*known, "id"):
        if candidate.lower() == name.strip().lower():
            return candidate
    raise GraphError(
        400,
        "BadRequest",
        f"Could not find a property named '{name.strip()}' on type 'microsoft.graph.{type_name}'.",
    )


def parse_select(value: str | None, type_name: str = "message") -> list[str] | None:
    if not value:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = MESSAGE_PROPERTIES if type_name == "message" else EVENT_PROPERTIES
    return [_canonical(n, known, type_name) for n in names]


def folder_json(folder: Folder, messages: list[Message], children: int) -> JSON:
    """mailFolder resource type."""
    inside = [m for m in messages if m.folder_id == folder.id]
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": children,
        "unreadItemCount": sum(1 for m in inside if not m.is_read),
        "totalItemCount": len(inside),
        "sizeInBytes": sum(len(m.mime) for m in inside),
        "isHidden": folder.is_hidden,
    }


@dataclass
class Event:
    id: str
    user_id: str
    subject: str
    start: dt.datetime
    end: dt.datetime
    created: dt.datetime
    modified: dt.datetime
    seq: int
    ical_uid: str
    organizer: tuple[str, str]
    body: JSON = field(default_factory=lambda: {"contentType": "html", "content": ""})
    location: str = ""
    categories: list[str] = field(default_factory=list)
    is_all_day: bool = False
    show_as: str = "busy"
    attendees: list[JSON] = field(default_factory=list)
    extended: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower id -> (id, value)

    @property
    def etag(self) -> str:
        return f'W/"{change_key(self.seq)}"'


EVENT_PROPERTIES = [
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "transactionId",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "iCalUId",
    "reminderMinutesBeforeStart",
    "isReminderOn",
    "hasAttachments",
    "subject",
    "bodyPreview",
    "importance",
    "sensitivity",
    "isAllDay",
    "isCancelled",
    "isOrganizer",
    "responseRequested",
    "seriesMasterId",
    "showAs",
    "type",
    "webLink",
    "onlineMeetingUrl",
    "isOnlineMeeting",
    "allowNewTimeProposals",
    "isDraft",
    "hideAttendees",
    "responseStatus",
    "body",
    "start",
    "end",
    "location",
    "locations",
    "recurrence",
    "attendees",
    "organizer",
    "onlineMeeting",
]


def event_json(event: Event, select: list[str] | None = None) -> JSON:
    """event resource type (times in UTC, as without Prefer: outlook.timezone)."""
    preview = " ".join(_strip_html(str(event.body.get("content", ""))).split())[:255]
    full: JSON = {
        "@odata.etag": event.etag,
        "id": event.id,
        "createdDateTime": iso7(event.created),
        "lastModifiedDateTime": iso7(event.modified),
        "changeKey": change_key(event.seq),
        "categories": list(event.categories),
        "transactionId": None,
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "iCalUId": event.ical_uid,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": True,
        "hasAttachments": False,
        "subject": event.subject,
        "bodyPreview": preview,
        "importance": "normal",
        "sensitivity": "normal",
        "isAllDay": event.is_all_day,
        "isCancelled": False,
        "isOrganizer": True,
        "responseRequested": True,
        "seriesMasterId": None,
        "showAs": event.show_as,
        "type": "singleInstance",
        "webLink": "https://outlook.office365.com/owa/?itemid="
        + event.id.replace("=", "%3D")
        + "&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": False,
        "allowNewTimeProposals": True,
        "isDraft": False,
        "hideAttendees": False,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": dict(event.body),
        "start": dttz(event.start),
        "end": dttz(event.end),
        "location": {
            "displayName": event.location,
            "locationType": "default",
            "uniqueIdType": "unknown",
            "address": {},
            "coordinates": {},
        },
        "locations": [],
        "recurrence": None,
        "attendees": list(event.attendees),
        "organizer": recipient(event.organizer),
        "onlineMeeting": None,
    }
    if select is None:
        return full
    out: JSON = {"@odata.etag": event.etag, "id": event.id}
    for name in select:
        if name in full:
            out[name] = full[name]
    return out
