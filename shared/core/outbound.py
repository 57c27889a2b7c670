"""Outbound mail, the pure part: compose a message safely and decide whether an automatic one
may go at all.

- Every header we write is written by hand, never through `email`'s header parser (which
  decodes RFC 2047 encoded words in what it is given, so `=?utf-8?q?a=0D=0ABcc:...?=` would
  become a real line break): unstructured values (subject, names) go out as literal ASCII when
  they are printable ASCII without `=?`, else as UTF-8 encoded words, so a recipient reads
  exactly the text we hold; attachment names as RFC 2231 `filename*` with an ASCII fallback;
  In-Reply-To and References as plain `<id>` tokens folded only between ids.
- Values are checked first: a line break, NUL or any other control character (C0, C1, VT, FF,
  NEL, U+2028/U+2029) in a subject, name or address is refused, never silently cleaned;
  addresses must be one plain address (IDNA domains go out as punycode; a non-ASCII local part
  would need SMTPUTF8, which Mailfiler does not use, and is refused).
- A gate (`check_wire`) reads the serialised header block of the mail and of each MIME part
  (not inside an attached original) and refuses anything but CRLF-terminated ASCII lines of at
  most 998 characters holding exactly the header names we meant to write. compose() runs it, and
  the outbound stage runs it again right before any transport gets the bytes.
- Automatic mail (acknowledgements, rejections, forwards) carries `Auto-Submitted:
  auto-replied` (RFC 3834) and `X-Auto-Response-Suppress: All` (what Exchange honours), so
  other robots do not answer it.
- RFC 3834 section 2: never auto-answer mail that is auto-submitted, from a list or bulk
  sender, from a no-reply or mailer-daemon address, or from our own addresses; and at most
  `per_window` automatic mails to one recipient in `window_minutes`, `per_day` in a day, so two
  systems that strip those headers still stop.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime, parseaddr

import idna

from .errors import MailfilerError

MAX_HEADER = 998  # RFC 5322's line limit, and a sane bound for one value
MAX_ID = 900  # a msg-id longer than this cannot share a line with its header name
NO_REPLY = re.compile(
    r"^(no-?reply|do-?not-?reply|mailer-daemon|postmaster|bounces?|notifications?)([+.\-_].*)?$",
    re.IGNORECASE,
)
# C0 and C1 controls (TAB, VT, FF, NEL included), DEL, and the Unicode line/paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+( [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MSG_ID = re.compile(r"[!-;=?-~]+")  # printable ASCII without space, < and >
_MIME_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(rf"{_MIME_NAME}/{_MIME_NAME}")
_FIELD_NAME = re.compile(rb"([!-9;-~]+):")
_FOLD_AT = 78  # RFC 5322's "SHOULD": fold where we can


class OutboundError(ValueError, MailfilerError):
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
    control = _CONTROL.search(value)
    if control is not None:
        raise OutboundError(
            f"{name} contains the control character U+{ord(control.group()):04X} (refused)"
        )
    if len(value) > MAX_HEADER:
        raise OutboundError(f"{name} is longer than {MAX_HEADER} characters")
    _check_unicode(name, value)
    return value


def _check_unicode(name: str, value: str) -> None:
    """A lone surrogate (JSON allows `\\ud800`) cannot be written as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise OutboundError(f"{name} is not valid Unicode (a lone surrogate)") from exc


def check_address(value: str, what: str = "address") -> str:
    """One plain address (`user@example.com`), as it goes on the wire: the domain lower-cased
    and in punycode (IDNA 2008 with UTS 46); anything else refused."""
    check_text(what, value)
    address = parseaddr(value)[1]
    written = value.strip()
    if not address or not (written == address or written.endswith(f"<{address}>")):
        raise OutboundError(f"{what} {value!r} is not one address")
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise OutboundError(f"{what} {value!r} is not a valid address")
    if not local.isascii():
        raise OutboundError(
            f"{what} {value!r}: a non-ASCII local part needs SMTPUTF8, which Mailfiler does not use"
        )
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        raise OutboundError(f"{what} {value!r} is not a valid address")
    try:
        ascii_domain = idna.encode(domain.rstrip("."), uts46=True).decode("ascii").lower()
    except (UnicodeError, ValueError) as exc:
        raise OutboundError(f"{what} {value!r} has an invalid domain") from exc
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", ascii_domain) or len(ascii_domain) > 253:
        raise OutboundError(f"{what} {value!r} has an invalid domain")
    return f"{local}@{ascii_domain}"


def message_id(value: str | None) -> str | None:
    """A msg-id (without angle brackets) fit to write as `<id>`, or None: printable ASCII, no
    whitespace, no `<` or `>`, at most MAX_ID characters."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text if len(text) <= MAX_ID and _MSG_ID.fullmatch(text) else None


# --- Writing headers by hand (no value of ours is ever parsed by `email`) --------------------


def _encoded_words(value: str) -> str:
    """RFC 2047 UTF-8 `B` encoded words of at most 75 characters, one per folded line, split
    between characters (never inside one), so decoders that join adjacent words get the text
    back exactly. Used wherever a literal value could be misread."""
    words, chunk = [], ""
    for char in value:
        if chunk and len(base64.b64encode((chunk + char).encode("utf-8"))) > 75 - 12:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return "\r\n ".join(
        f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words
    )


def _fold_spaces(line: str) -> str | None:
    """Fold an unstructured field before spaces; None if a line would stay over 998."""
    words = line.split(" ")
    lines, current = [], words[0]
    for word in words[1:]:
        if word and len(current) + 1 + len(word) > _FOLD_AT and current.strip():
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    if any(len(x) > MAX_HEADER for x in lines):
        return None
    return "\r\n".join(lines)


def _unstructured(name: str, value: str) -> str:
    """`Name: value` for a subject or a similar free-text field."""
    # Literal when nothing in it can be misread; readers drop a leading space, so not then.
    if _PRINTABLE.fullmatch(value) and "=?" not in value and not value.startswith(" "):
        folded = _fold_spaces(f"{name}: {value}")
        if folded is not None:
            return folded
    return f"{name}: {_encoded_words(value)}"


def _phrase(value: str) -> str:
    """A display name as an RFC 5322 phrase: atoms, a quoted string, or encoded words."""
    if _ATOMS.fullmatch(value) and "=?" not in value:
        return value
    if _PRINTABLE.fullmatch(value) and "=?" not in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return _encoded_words(value)


def _fold_items(name: str, items: Sequence[str], joiner: str = "") -> str:
    """`Name: a<joiner> b ...`, folded only between items (CRLF SP)."""
    lines, current = [], f"{name}: {items[0]}"
    for item in items[1:]:
        if len(current) + len(joiner) + 1 + len(item) > _FOLD_AT:
            lines.append(current + joiner)
            current = " " + item
        else:
            current += f"{joiner} {item}"
    lines.append(current)
    return "\r\n".join(lines)


def _ascii_name(filename: str) -> str:
    """The ASCII fallback `filename=`: printable, no quote or backslash, no `=?`."""
    out = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return out.replace("=?", "=_").strip() or "attachment"


def _percent(value: str) -> str:
    """RFC 2231/5987 value-chars: attr-chars as they are, every other UTF-8 byte as %XX (the
    core stays free of urllib, a network package)."""
    safe = set(b"!#$&+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    return "".join(chr(b) if b in safe else f"%{b:02X}" for b in value.encode("utf-8"))


def _name_params(param: str, filename: str) -> list[str]:
    """`filename` (or `name`) parameters: RFC 2231 `param*` in UTF-8 (split in continuations
    so no line grows long) when the name is not plain ASCII, then the ASCII fallback."""
    fallback = _ascii_name(filename)
    params = []
    if fallback != filename:
        encoded = _percent(filename)
        if len(encoded) <= 60:
            params.append(f"{param}*=utf-8''{encoded}")
        else:
            chunks, chunk = [], ""
            for piece in re.findall(r"%[0-9A-F]{2}|.", encoded):
                if len(chunk) + len(piece) > 60:
                    chunks.append(chunk)
                    chunk = ""
                chunk += piece
            chunks.append(chunk)
            params.extend(
                f"{param}*{i}*=" + ("utf-8''" if i == 0 else "") + c for i, c in enumerate(chunks)
            )
    params.append(f'{param}="{fallback}"')
    return params


def _params(head: str, params: Sequence[str]) -> str:
    """`Name: value;` with each parameter on a line of its own."""
    return ";\r\n ".join([head, *params])


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _text_part(body: str) -> tuple[list[str], bytes]:
    """The body as UTF-8 quoted-printable (7-bit clean, CRLF line ends)."""
    text = body.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(text, quotetabs=False, istext=True)
    return (
        [
            'Content-Type: text/plain; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
        ],
        encoded.replace(b"\n", b"\r\n"),
    )


def _attachment_part(item: Attachment) -> tuple[list[str], bytes]:
    check_text("attachment name", item.filename)
    kind = item.content_type.strip().lower()
    if kind == "message/rfc822":
        # An original kept as it came (RFC 2046: never base64); one that cannot travel as
        # 7bit/8bit (NUL, lines over 998) goes as bytes instead.
        data = _crlf(item.data)
        if b"\x00" not in data and all(len(x) <= MAX_HEADER for x in data.split(b"\r\n")):
            cte = "7bit" if data.isascii() else "8bit"
            return [
                "Content-Type: message/rfc822",
                f"Content-Transfer-Encoding: {cte}",
                _params("Content-Disposition: attachment", _name_params("filename", item.filename)),
            ], data
        kind = "application/octet-stream"
    if not _CONTENT_TYPE.fullmatch(kind) or kind.startswith(("multipart/", "message/")):
        kind = "application/octet-stream"  # a type the mail claimed, not one we can vouch for
    return [
        _params(f"Content-Type: {kind}", _name_params("name", item.filename)),
        "Content-Transfer-Encoding: base64",
        _params("Content-Disposition: attachment", _name_params("filename", item.filename)),
    ], _base64(item.data)


def header_names(draft: Draft) -> list[str]:
    """The top-level header names compose() writes for this draft, in order."""
    names = ["From", "To"]
    if draft.cc:
        names.append("Cc")
    names += ["Subject", "Date", "Message-ID"]
    if message_id(draft.in_reply_to):
        names.append("In-Reply-To")
    if any(message_id(r) for r in draft.references):
        names.append("References")
    if draft.automatic:
        names += ["Auto-Submitted", "X-Auto-Response-Suppress", "Precedence"]
    if draft.ref_header:
        names.append("X-Mailfiler-Ref")
    names += ["MIME-Version", "Content-Type"]
    if not draft.attachments:
        names.append("Content-Transfer-Encoding")
    return names


def _headers(draft: Draft) -> list[str]:
    if not draft.to:
        raise OutboundError("no recipient")
    sender = check_address(draft.sender, "from")
    name = check_text("sender name", draft.sender_name)
    lines = [f"From: {_phrase(name)} <{sender}>" if name else f"From: {sender}"]
    lines.append(_fold_items("To", [check_address(a, "to") for a in draft.to], ","))
    if draft.cc:
        lines.append(_fold_items("Cc", [check_address(a, "cc") for a in draft.cc], ","))
    lines.append(_unstructured("Subject", check_text("subject", draft.subject)))
    lines.append(f"Date: {format_datetime(draft.date)}")
    own = message_id(draft.message_id)
    if own is None or own != draft.message_id:
        raise OutboundError(f"message id {draft.message_id!r} is not a valid msg-id")
    lines.append(f"Message-ID: <{own}>")
    # Ids of other people's mail that cannot be written as a plain <id> are left out: the
    # mail still goes, threaded by its token and X-Mailfiler-Ref.
    answered = message_id(draft.in_reply_to)
    if answered:
        lines.append(f"In-Reply-To: <{answered}>")
    references = [f"<{r}>" for r in map(message_id, draft.references) if r]
    if references:
        lines.append(_fold_items("References", references[-20:]))
    if draft.automatic:
        lines += ["Auto-Submitted: auto-replied", "X-Auto-Response-Suppress: All"]
        lines.append("Precedence: auto_reply")
    if draft.ref_header:
        lines.append(_unstructured("X-Mailfiler-Ref", check_text("ref", draft.ref_header)))
    lines.append("MIME-Version: 1.0")
    return lines


def compose(draft: Draft, max_bytes: int) -> bytes:
    """The message as bytes for SMTP (CRLF, 7-bit headers), or OutboundError."""
    lines = _headers(draft)
    if "\x00" in draft.body:
        raise OutboundError("the body contains NUL")
    _check_unicode("the body", draft.body)
    text_headers, text = _text_part(draft.body)
    if not draft.attachments:
        raw = "\r\n".join([*lines, *text_headers]).encode("ascii") + b"\r\n\r\n" + text
    else:
        parts = [(text_headers, text), *(_attachment_part(a) for a in draft.attachments)]
        boundary = _boundary(draft.message_id, [body for _, body in parts])
        lines.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        out = ["\r\n".join(lines).encode("ascii"), b"\r\n\r\n"]
        for headers, body in parts:
            out += [b"--", boundary.encode(), b"\r\n", "\r\n".join(headers).encode("ascii")]
            out += [b"\r\n\r\n", body, b"\r\n"]
        out += [b"--", boundary.encode(), b"--\r\n"]
        raw = b"".join(out)
    check_wire(raw, draft)
    if len(raw) > max_bytes:
        raise OutboundError(f"the mail is {len(raw)} bytes; the limit is {max_bytes}")
    return raw


def _boundary(seed: str, bodies: Sequence[bytes]) -> str:
    """Deterministic (the same draft composes to the same bytes) and in no part's body; `=_`
    cannot occur in quoted-printable or base64, only an attached original could hold it."""
    for n in range(1000):
        boundary = "=_mf_" + hashlib.sha256(f"{seed}\x00{n}".encode()).hexdigest()[:32]
        if not any(boundary.encode() in body for body in bodies):
            return boundary
    raise OutboundError("no MIME boundary found that the attachments do not contain")


# --- The gate ------------------------------------------------------------------------------


def _header_block(block: bytes, where: str) -> list[tuple[str, str]]:
    """(name, unfolded value) of each field of a header block, or OutboundError."""
    if not block.isascii():
        raise OutboundError(f"{where}: a non-ASCII byte in the header block")
    fields: list[tuple[str, str]] = []
    for line in block.split(b"\r\n"):
        if b"\r" in line or b"\n" in line:
            raise OutboundError(f"{where}: a bare CR or LF in the header block")
        if len(line) > MAX_HEADER:
            raise OutboundError(f"{where}: a header line longer than {MAX_HEADER} characters")
        if re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", line):
            raise OutboundError(f"{where}: a control character in the header block")
        if line[:1] in (b" ", b"\t"):
            if not fields or not line.strip():
                raise OutboundError(f"{where}: a stray continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + line.decode("ascii"))
            continue
        found = _FIELD_NAME.match(line)
        if found is None:
            raise OutboundError(f"{where}: a line that is neither a header nor its continuation")
        fields.append((found.group(1).decode("ascii"), line[found.end() :].decode("ascii")))
    return fields


def _same_names(fields: list[tuple[str, str]], wanted: Sequence[str], where: str) -> None:
    found = sorted(n.lower() for n, _ in fields)
    if found != sorted(n.lower() for n in wanted):
        extra = sorted(set(found) - {n.lower() for n in wanted})
        raise OutboundError(
            f"{where}: the headers are not the ones written (found {', '.join(found)}"
            + (f"; unexpected {', '.join(extra)}" if extra else "")
            + ")"
        )


def check_wire(raw: bytes, draft: Draft) -> None:
    """Refuse the serialised mail unless its header block, and each MIME part's own, is
    CRLF-terminated printable ASCII in lines of at most 998 holding exactly the fields we meant
    to write (no Bcc, no second Content-Type, ...). An attached original is not read."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise OutboundError("the mail has no end of its header block")
    fields = _header_block(head, "the mail")
    _same_names(fields, header_names(draft), "the mail")
    if not draft.attachments:
        return
    content_type = next(v for n, v in fields if n.lower() == "content-type")
    found = re.fullmatch(r'\s*multipart/mixed;\s*boundary="([^"]+)"\s*', content_type)
    if found is None:
        raise OutboundError("the mail: not the multipart/mixed we wrote")
    boundary = found.group(1).encode("ascii")
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)
    if pieces[0] or not pieces[-1].startswith(b"--"):
        raise OutboundError("the mail: its MIME parts are not the ones written")
    parts = pieces[1:-1]
    if len(parts) != 1 + len(draft.attachments):
        raise OutboundError("the mail: its MIME parts are not the ones written")
    for i, part in enumerate(parts):
        if not part.startswith(b"\r\n"):
            raise OutboundError(f"MIME part {i}: a boundary line with trailing text")
        part_head, sep, _ = part[2:].partition(b"\r\n\r\n")
        if not sep:
            raise OutboundError(f"MIME part {i}: no end of its header block")
        wanted = ["Content-Type", "Content-Transfer-Encoding"]
        if i:
            wanted.append("Content-Disposition")
        _same_names(_header_block(part_head, f"MIME part {i}"), wanted, f"MIME part {i}")


def render(template: str, values: Mapping[str, str]) -> str:
    """`$name` / `${name}` placeholders (string.Template); unknown ones stay as written."""
    return string.Template(template).safe_substitute(values)


def one_line(value: str) -> str:
    """A value for a header built from mail text: line breaks and other control characters
    become spaces (a stranger's VT or NEL must not cost them the acknowledgement)."""
    return " ".join(_CONTROL.sub(" ", value).split())


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
