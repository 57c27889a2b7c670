"""MIME parsing: raw bytes in, `MailMessage` out, and never an exception.

Mail from the wild breaks every parser, and one unreadable message must not stop a mailbox, so
each step has a fallback and notes what went wrong in `MailMessage.defects` (short strings,
never message content):

* the structure is parsed with `compat32`, which tolerates what crashes `policy.default`
  (``name*`` parameters in `parsebytes`, CPython #151857);
* headers are always read from `raw_items()` and decoded here (RFC 2047, raw 8-bit bytes),
  because `policy.default` header access raises on Outlook ``<[x]@host>`` Message-IDs and on
  some malformed address lists;
* MIME parameters (type, charset, filename incl. RFC 2231) are read through a `compat32` view
  of the part's raw headers, which tolerates anything;
* bodies are decoded with their declared charset, mapped through common aliases, and fall back
  to UTF-8, then windows-1252, with replacement characters.

Field rules worth knowing:

* `text` is the first non-empty text/plain part that is not an attachment, else the first
  text/html part as plain text (`html_text`); line ends become ``\n``;
* attachments are parts with ``Content-Disposition: attachment`` or a filename, every
  non-text leaf (``inline`` when disposed inline, or undisposed with a Content-ID), text
  parts other than plain/html (calendars, CSV, rfc822-headers), and every message/* part,
  whose text is never merged into ours; a message/* size is its re-serialised length;
* References are trimmed to the first one (the thread root) plus the last `MAX_REFERENCES`:
  threading only needs the root and the recent ancestors, and some lists send hundreds;
* addresses are parsed from the raw values of every occurrence of their header (`addresses`:
  RFC 5322 with its obsolete forms, RFC 6532 UTF-8, never a display name as the address),
  names decoded afterwards, so an encoded comma in a display name cannot split an address;
* what a hostile mail can make huge is cut to a size (subject, header values, names, counts of
  headers, addresses and ids) and noted in `defects`; the raw mail keeps it whole;
* mail whose structure the parser cannot read (1,000 nested multiparts exhaust its recursion)
  keeps its top-level headers, read from the header block alone, with no text or attachments and
  a ``parser-failed`` defect.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from shared.core.addresses import ParsedAddress, parse_address_list
from shared.core.clip import clip
from shared.core.hollow import Hollow, hollow
from shared.core.html_text import html_to_text
from shared.core.message import Address, Attachment, MailMessage, fallback_key, id_key
from shared.core.mimetree import parse_tree
from shared.core.subject import normalize_subject

MAX_REFERENCES = 32
MAX_DEFECTS = 50
MAX_DEPTH = 40  # nested multiparts deeper than this are garbage or an attack
MAX_PARTS = 2_000
# What a mail keeps of what its sender can make huge (the raw mail keeps all of it). A subject
# longer than a record's title (1,000 characters, Table Storage) is cut to it, so title and
# subject still compare equal under the subject guard.
MAX_SUBJECT_CHARS = 1_000
MAX_HEADER_CHARS = 8_192
MAX_HEADERS = 500
MAX_NAME_CHARS = 200
MAX_ADDRESS_CHARS = 320  # RFC 5321 allows 254; longer is not an address anyone can answer
MAX_ADDRESSES = 1_000
# The body text is read from the first MAX_TEXT_BYTES of its part: enough for any mail a person
# wrote, and a 100 MB text part costs a bounded string, not 100 MB (or 400 MB as UCS-4).
MAX_TEXT_BYTES = 2 * 1024 * 1024
# Bodies longer than this (encoded characters) are decoded a slice at a time, so a big
# attachment is never held twice (encoded and decoded) to learn its size or store it.
LARGE_BODY_CHARS = 1024 * 1024

# Charset labels seen in real mail that Python does not know, or knows under another name.
# None means "no usable label": guess from the bytes.
_CHARSET_ALIASES: dict[str, str | None] = {
    "unicode-1-1-utf-7": "utf-7",
    "unicode-1-1-utf-8": "utf-8",
    "utf8": "utf-8",
    "x-unknown": None,
    "unknown": None,
    "unknown-8bit": None,
    "x-user-defined": None,
    "default": None,
    "charset": None,
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "windows-874": "cp874",
    "x-windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "ms932": "cp932",
    "windows-31j": "cp932",
    "gb2312": "gbk",  # senders label GBK text as GB2312; GBK is a superset
    "x-gbk": "gbk",
    "big5": "big5hkscs",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "iso-8859-1": "cp1252",  # as browsers do: Windows senders mislabel cp1252 as latin-1
    "us-ascii": "utf-8",  # ASCII is a subset; 8-bit bytes under an ASCII label are usually UTF-8
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
}
# Codecs that exist but do not turn bytes into text (bytes.decode raises LookupError anyway,
# but rot13 is a str codec and others are not charsets at all).
# When bytes do not decode in their declared charset, a sibling of the same script usually
# does (Japanese mobile carriers label EUC-JP as ISO-2022-JP, for one).
_CHARSET_SIBLINGS: dict[str, tuple[str, ...]] = {
    "iso2022_jp": ("iso2022_jp_ext", "euc_jp", "cp932"),
    "euc_jp": ("cp932",),
    "shift_jis": ("cp932", "euc_jp"),
    "cp932": ("euc_jp",),
    "gbk": ("gb18030",),
    "big5hkscs": ("cp950",),
    "cp949": ("iso2022_kr",),
}
_NOT_CHARSETS = frozenset({"base64", "hex", "quopri", "uu", "zlib", "bz2", "rot13", "idna"})

_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([bBqQ])\?(.*?)\?=")
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_WHITESPACE = re.compile(r"\s+")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]+")
_OBSOLETE_NAME = re.compile(rb"^([!-9;-~]+)[ \t]+:", re.M)


class _Defects:
    """What went wrong, deduplicated and capped so a broken message cannot bloat its record."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}

    def add(self, defect: str) -> None:
        if len(self._items) < MAX_DEFECTS:
            self._items.setdefault(defect[:80], None)

    def extend(self, defects: Iterable[str]) -> None:
        for defect in defects:
            self.add(defect)

    def items(self) -> tuple[str, ...]:
        return tuple(self._items)


def _label(text: str) -> str:
    """A charset or other token from the mail, made safe and short for a defect string."""
    return "".join(ch for ch in text[:30] if ch.isprintable())


# --- text decoding ---------------------------------------------------------------------------


def _codec(charset: str | None, defects: _Defects) -> str | None:
    """The Python codec for a MIME charset label, or None to guess."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    if label in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[label]
    try:
        name = codecs.lookup(label).name
    except (LookupError, ValueError):
        defects.add(f"unknown-charset:{_label(label)}")
        return None
    if name in _NOT_CHARSETS or name.endswith("_codec"):
        defects.add(f"unknown-charset:{_label(label)}")
        return None
    return name


def _decode_bytes(data: bytes, charset: str | None, defects: _Defects) -> str:
    """`data` as text in `charset`, else UTF-8, else windows-1252 with replacement characters."""
    codec = _codec(charset, defects)
    if codec is not None:
        for candidate in (codec, *_CHARSET_SIBLINGS.get(codec, ())):
            try:
                text = data.decode(candidate)
            except Exception:  # noqa: S112 - UnicodeDecodeError, or a codec broken by bad input
                continue
            if candidate != codec:
                defects.add(f"charset-mismatch:{_label(charset or '')}")
            return _valid(text)
        defects.add(f"charset-mismatch:{_label(charset or '')}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _valid(text: str) -> str:
    """`text` with lone surrogates replaced: UTF-7 and UTF-16 can produce them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _from_surrogates(text: str) -> str:
    """Undo the parser's surrogateescape of raw 8-bit header bytes (UTF-8, else cp1252)."""
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _valid(text)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    """The bytes of one RFC 2047 encoded word, tolerating bad padding; None if hopeless."""
    data = text.encode("utf-8", "replace")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    data = data.strip()
    for candidate in (data, data[:-1]):
        try:
            return binascii.a2b_base64(candidate + b"=" * (-len(candidate) % 4))
        except (binascii.Error, ValueError):
            continue
    return None


def _decode_words(value: str, defects: _Defects) -> str:
    """Decode RFC 2047 encoded words in a header value.

    Adjacent words in one charset are joined before decoding, because encoders split multi-byte
    characters across words; whitespace between encoded words is dropped, as the RFC says.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_decode_bytes(bytes(pending), pending_charset, defects))
        pending.clear()
        pending_charset = None

    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        if between and not (pending_charset is not None and between.isspace()):
            flush()
            out.append(between)
        pos = match.end()
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            flush()
            defects.add("bad-encoded-word")
            out.append(match.group(0))
            continue
        charset = match.group(1).split("*", 1)[0].lower() or "us-ascii"  # drop RFC 2231 lang
        if charset != pending_charset:
            flush()
            pending_charset = charset
        pending += data
    flush()
    out.append(value[pos:])
    return "".join(out)


# --- headers ---------------------------------------------------------------------------------


class _Headers:
    """The header block as (name, unfolded raw value) pairs, read without the policy's parsers."""

    def __init__(self, message: Message, defects: _Defects) -> None:
        self._defects = defects
        self.items: list[tuple[str, str]] = []
        try:
            raw_items: Iterable[tuple[str, object]] = message.raw_items()
            for name, value in raw_items:
                text = _LINE_BREAK.sub("", value if isinstance(value, str) else str(value))
                self.items.append((_from_surrogates(name).strip(), _from_surrogates(text)))
        except Exception as exc:
            defects.add(f"headers-unreadable:{type(exc).__name__}")

    def raw(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.items:
            if key.lower() == wanted:
                return value
        return None

    def raw_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.items if key.lower() == wanted]

    def decoded(self, name: str) -> str:
        value = self.raw(name)
        return "" if value is None else _decode_words(value, self._defects)

    def all_decoded(self) -> tuple[tuple[str, str], ...]:
        """Every header, decoded, as the message keeps them: at most `MAX_HEADERS`, each value
        at most `MAX_HEADER_CHARS` (the fields read above come from the whole values)."""
        if len(self.items) > MAX_HEADERS:
            self._defects.add("too-many-headers")
        out: list[tuple[str, str]] = []
        for key, value in self.items[:MAX_HEADERS]:
            decoded = _decode_words(value, self._defects)
            if len(decoded) > MAX_HEADER_CHARS:
                self._defects.add("header-truncated")
                decoded = clip(decoded, MAX_HEADER_CHARS)
            out.append((clip(key, 200), decoded))
        return tuple(out)


def _clean_id(token: str) -> str:
    return _WHITESPACE.sub("", token).strip("<>")


def message_id_of(value: str | None) -> str | None:
    """A Message-ID header value (or Graph's internetMessageId) as the pipeline keys it."""
    return _message_id(value)


def _message_id(value: str | None) -> str | None:
    if value is None:
        return None
    match = _ANGLE_ID.search(value)
    ident = _clean_id(match.group(1) if match else value)
    return ident or None


def _id_list(value: str | None) -> tuple[str, ...]:
    """Message-IDs in an In-Reply-To/References value, in order, without duplicates."""
    if not value:
        return ()
    tokens = _ANGLE_ID.findall(value)
    if not tokens:  # no brackets: keep bare tokens that look like ids
        tokens = [t for t in re.split(r"[\s,]+", value) if "@" in t] or value.split()[:1]
    ids = dict.fromkeys(filter(None, map(_clean_id, tokens)))
    return tuple(ids)


def _references(value: str | None) -> tuple[str, ...]:
    ids = _id_list(value)
    if len(ids) <= MAX_REFERENCES:
        return ids
    return (ids[0], *ids[-MAX_REFERENCES:])


def _address(parsed: ParsedAddress, defects: _Defects) -> Address | None:
    email = f"{parsed.local}@{parsed.domain.lower()}"
    if len(email) > MAX_ADDRESS_CHARS:
        # Dropped, not cut: a cut address would be another address.
        defects.add("address-too-long")
        return None
    display = " ".join(_decode_words(parsed.name, defects).split()).strip("\"' ")
    return Address(email=email, name=clip(display, MAX_NAME_CHARS))


def _addresses(values: Iterable[str], defects: _Defects) -> tuple[Address, ...]:
    """The addresses of every occurrence of one header, in order (real mail repeats `To:`).

    Only what `parse_address_list` accepts as an address counts: a display name is never
    taken for one, and an entry that is not an address gives none (a defect says so).
    """
    found: list[Address] = []
    for value in values:
        if len(found) >= MAX_ADDRESSES:
            defects.add("too-many-addresses")
            break
        parsed, notes = parse_address_list(value, MAX_ADDRESSES - len(found))
        defects.extend(notes)
        found.extend(a for a in (_address(p, defects) for p in parsed) if a is not None)
    return tuple(found)


def addresses_of(values: Iterable[str]) -> tuple[Address, ...]:
    """The addresses in the values of one address header (`Resent-To:`, say), read as
    `parse_message` reads `To:`. Pass values before RFC 2047 decoding: a decoded comma in a
    display name would split it."""
    return _addresses(values, _Defects())


def _date(value: str | None, received_at: datetime | None, defects: _Defects) -> datetime | None:
    if value and value.strip():
        try:
            date = parsedate_to_datetime(value.strip())
        except Exception:  # ValueError, TypeError, OverflowError: the stdlib is not consistent
            defects.add("date-unparsable")
        else:
            if date.tzinfo is None:
                defects.add("date-naive")
                date = date.replace(tzinfo=UTC)
            return date
    else:
        defects.add("date-missing")
    if received_at is not None and received_at.tzinfo is None:
        return received_at.replace(tzinfo=UTC)
    return received_at


# --- structure -------------------------------------------------------------------------------


def _parse_tree(raw: bytes, defects: _Defects) -> tuple[Message | None, Hollow]:
    # compat32 only: the structure is the same under every policy, and since headers and
    # parameters are read raw and decoded here, policy.default's header objects would cost
    # (about 70% of the parse time, measured) without being used. Big mail is parsed with its
    # base64 runs standing aside (`hollow`), so the tree does not hold them.
    shell = hollow(raw)
    try:
        return parse_tree(shell.data), shell
    except Exception as exc:  # RecursionError at ~1,000 nested multiparts, MemoryError
        defects.add(f"parser-failed:{type(exc).__name__}")
    return None, shell


def header_block(raw: bytes) -> bytes:
    """The top-level header block of `raw`: everything up to the first empty line."""
    end = _HEADER_END.search(raw)
    return raw[: end.end()] if end else raw


def _modern_names(raw: bytes, defects: _Defects) -> bytes:
    """`raw` with obsolete ``Name  :`` header fields (RFC 5322 4.5, Appendix A.6.3) written
    ``Name:`` in the top-level header block, for the parser alone: the stdlib reads a first
    ``From  :`` as an mbox From_ line and any other as the start of the body. `raw` is kept."""
    block = header_block(raw)
    if not _OBSOLETE_NAME.search(block):
        return raw
    defects.add("obsolete-header-name")
    return _OBSOLETE_NAME.sub(rb"\1:", block) + raw[len(block) :]


def _header_tree(raw: bytes) -> Message:
    """The top-level headers alone, for mail whose structure cannot be read: the header block
    parses without recursion, so distinct mails keep their own Message-ID, From and Subject."""
    return BytesParser(policy=policy.compat32).parsebytes(header_block(raw), headersonly=True)


def header_message_id(raw: bytes) -> str | None:
    """The Message-ID `parse_message` would key `raw` by, read from the header block alone
    (ingest notes it cheaply before the mail is queued); None when there is none."""
    try:
        return _message_id(_Headers(_header_tree(raw), _Defects()).raw("message-id"))
    except Exception:  # unreadable headers: the map stage keys such mail by its bytes
        return None


class _Part:
    """One MIME part's metadata, read through a tolerant `compat32` view of its raw headers."""

    def __init__(self, part: Message, defects: _Defects, shell: Hollow | None = None) -> None:
        self.part = part
        self.shell = shell
        view = Message(policy=policy.compat32)
        raw = _Headers(part, defects)
        for name in ("content-type", "content-disposition"):
            value = raw.raw(name)
            if value is not None:
                view[name] = value
        self.content_id = _message_id(raw.raw("content-id"))
        self.cte = (raw.raw("content-transfer-encoding") or "").strip().lower()
        try:
            has_type = "content-type" in view
            self.content_type = (
                view.get_content_type() if has_type else part.get_default_type()
            ).lower()
            self.disposition = view.get_content_disposition()
            self.charset = view.get_content_charset()
        except Exception as exc:
            defects.add(f"mime-params:{type(exc).__name__}")
            self.content_type, self.disposition, self.charset = (
                "application/octet-stream",
                None,
                None,
            )
        self.filename = self._filename(view, defects)

    @staticmethod
    def _filename(view: Message, defects: _Defects) -> str | None:
        try:
            name = view.get_filename()
        except Exception as exc:
            defects.add(f"filename:{type(exc).__name__}")
            return None
        if not name:
            return None
        # Outlook and Gmail put RFC 2047 words inside quoted filenames, against the RFC.
        name = " ".join(_decode_words(_from_surrogates(name), defects).split())
        return _valid(name) or None

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def is_attachment(self) -> bool:
        return self.disposition == "attachment" or self.filename is not None

    def payload(self, defects: _Defects) -> bytes:
        """The decoded bytes of a leaf part (Content-Transfer-Encoding undone)."""
        if self._hollowed() is not None:
            return b"".join(self.chunks(defects))
        try:
            data = self.part.get_payload(decode=True)
        except Exception as exc:
            defects.add(f"payload:{type(exc).__name__}")
            data = None
        if isinstance(data, bytes):
            return data
        body = self.part.get_payload()
        if isinstance(body, str):
            return body.encode("ascii", "surrogateescape")
        return b""

    def _hollowed(self) -> str | None:
        """The body as the parser kept it when some of it stands aside (see `hollow`)."""
        body = self.part.get_payload()
        if self.shell is not None and isinstance(body, str) and self.shell.holds(body):
            return body
        return None

    def _encoded(self) -> Iterator[bytes] | None:
        """The encoded body in slices when it is large (or partly aside), else None."""
        body = self.part.get_payload()
        if not isinstance(body, str):
            return None
        if self.shell is not None and self.shell.holds(body):
            return self.shell.pieces(body)
        if len(body) <= LARGE_BODY_CHARS:
            return None
        return (
            body[at : at + LARGE_BODY_CHARS].encode("ascii", "surrogateescape")
            for at in range(0, len(body), LARGE_BODY_CHARS)
        )

    def chunks(self, defects: _Defects) -> Iterator[bytes]:
        """The decoded bytes of a leaf part, in slices of about a megabyte for a large body
        (the same bytes the stdlib gives for well-formed base64), else in one piece."""
        encoded = self._encoded()
        if encoded is None:
            yield self.payload(defects)
            return
        if self.cte in ("7bit", "8bit", "binary", ""):  # the encoded bytes are the bytes
            yield from encoded
            return
        if self.cte != "base64":  # quoted-printable, uuencode: rare when big; decoded whole
            whole = Message(policy=policy.compat32)
            whole["Content-Transfer-Encoding"] = self.cte
            whole.set_payload(b"".join(encoded).decode("ascii", "surrogateescape"))
            data = whole.get_payload(decode=True)
            yield data if isinstance(data, bytes) else b""
            return
        carry = b""
        for piece in encoded:
            piece = carry + _NOT_BASE64.sub(b"", piece)
            usable = len(piece) - len(piece) % 4  # whole 4-character groups only
            carry = piece[usable:]
            if usable:
                yield self._b64(piece[:usable], defects)
        if carry:
            yield self._b64(carry + b"=" * (-len(carry) % 4), defects)

    @staticmethod
    def _b64(data: bytes, defects: _Defects) -> bytes:
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            defects.add("payload:base64")
            return b""

    def size(self, defects: _Defects) -> int:
        """The decoded size of a leaf part, without holding a large one decoded."""
        return sum(len(chunk) for chunk in self.chunks(defects))

    def head(self, limit: int, defects: _Defects) -> tuple[bytes, bool]:
        """The first `limit` decoded bytes (about) of a leaf part, and whether there is more."""
        out = bytearray()
        for chunk in self.chunks(defects):
            if len(out) >= limit:
                return bytes(out), True
            out += chunk
        return bytes(out), False

    def flattened_size(self, linesep: str, defects: _Defects) -> int:
        """Length of an embedded message (message/*), re-serialised with the mail's line ends.

        The parser keeps no offsets, so this is the stdlib's rendering of the part: exact for
        ordinary mail, close for mail with odd folding.
        """
        return len(self.flattened(linesep, defects))

    def flattened(self, linesep: str, defects: _Defects) -> bytes:
        """A message/* part's bytes: the stdlib's rendering of the embedded mail."""
        payload = self.part.get_payload()
        if isinstance(payload, str | bytes):
            return self.payload(defects)
        try:
            subs = [sub for sub in payload if isinstance(sub, Message)]
            render = policy.compat32.clone(linesep=linesep)
            data = b"".join(sub.as_bytes(policy=render) for sub in subs)
            return self.shell.expand(data) if self.shell is not None else data
        except Exception as exc:
            defects.add(f"embedded-size:{type(exc).__name__}")
            return b""


def _leaves(message: Message, defects: _Defects, shell: Hollow | None = None) -> Iterator[_Part]:
    """Leaf parts in document order; message/* parts are leaves: their text is not ours."""
    stack: list[tuple[Message, int]] = [(message, 0)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > MAX_PARTS:
            defects.add("too-many-parts")
            return
        defects.extend(type(d).__name__ for d in getattr(part, "defects", ()))
        info = _Part(part, defects, shell)
        children = part.get_payload()
        if isinstance(children, list) and info.maintype != "message":
            if depth >= MAX_DEPTH:
                defects.add("too-deep")
                continue
            subs = [child for child in children if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(subs))
            continue
        if info.maintype == "multipart":  # no boundary: the parser kept it as one text blob
            defects.add("multipart-without-parts")
            info.content_type = "text/plain"
        yield info


def _text_of(info: _Part, defects: _Defects) -> str:
    """A text part as text, from at most MAX_TEXT_BYTES of it, cut between whole characters."""
    data, more = info.head(MAX_TEXT_BYTES, defects)
    if not more and len(data) <= MAX_TEXT_BYTES:
        return _decode_bytes(data, info.charset, defects)
    defects.add("text-truncated")
    data = data[:MAX_TEXT_BYTES]
    codec = _codec(info.charset, _Defects()) or "utf-8"
    try:  # drop the bytes of a character the cut split
        decoder = codecs.getincrementaldecoder(codec)()
        decoder.decode(data, final=False)
        pending = decoder.getstate()[0]
        data = data[: len(data) - len(pending)] if pending else data
    except Exception:  # noqa: S110 - a codec without state: decoding tolerates the end anyway
        pass
    return _decode_bytes(data, info.charset, defects)


def _attachment(info: _Part, linesep: str, defects: _Defects) -> Attachment:
    if info.maintype == "message":
        size = info.flattened_size(linesep, defects)
    else:
        size = info.size(defects)
    inline = info.disposition == "inline" or (
        info.disposition is None and info.content_id is not None
    )
    return Attachment(
        filename=info.filename,
        content_type=info.content_type,
        size=size,
        content_id=info.content_id,
        inline=inline,
    )


Content = Callable[[], Iterator[bytes]]


def iter_attachments(raw: bytes) -> Iterator[tuple[Attachment, Content]]:
    """Every attachment of `raw`, in the order of `attachments`, with a function that yields
    its decoded bytes in slices (call it again to read them again): a big attachment is never
    held whole. Never raises: unreadable mail has none."""
    defects = _Defects()
    message, shell = _parse_tree(raw, defects)
    if message is None:
        return
    linesep = "\r\n" if b"\r\n" in raw[:65536] else "\n"
    for info in _leaves(message, defects, shell):
        body_type = info.content_type in ("text/plain", "text/html")
        if info.maintype == "message" or info.is_attachment or not body_type:
            yield _attachment(info, linesep, defects), _content(info, linesep, defects)


def _content(info: _Part, linesep: str, defects: _Defects) -> Content:
    def read() -> Iterator[bytes]:
        if info.maintype == "message":
            yield info.flattened(linesep, defects)
        else:
            yield from info.chunks(defects)

    return read


def attachment_contents(raw: bytes) -> list[tuple[Attachment, bytes]]:
    """Every attachment of `raw` with its decoded bytes (all in memory: small mail only)."""
    return [(meta, b"".join(content())) for meta, content in iter_attachments(raw)]


def _body_and_attachments(
    message: Message, shell: Hollow, linesep: str, defects: _Defects
) -> tuple[str, tuple[Attachment, ...]]:
    plain: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for info in _leaves(message, defects, shell):
        body_type = info.content_type in ("text/plain", "text/html")
        if info.maintype == "message" or info.is_attachment or not body_type:
            attachments.append(_attachment(info, linesep, defects))
        elif info.content_type == "text/plain" and not (plain and plain.strip()):
            # An empty text/plain (some Outlook builds send one) loses to a later part.
            candidate = _text_of(info, defects)
            if plain is None or candidate.strip():
                plain = candidate
        elif info.content_type == "text/html" and html is None:
            html = _text_of(info, defects)
    if plain and plain.strip():
        text = plain
    elif html is not None:
        notes: list[str] = []
        text = html_to_text(html, notes)
        defects.extend(notes)
    else:
        text = plain or ""
    return text.replace("\r\n", "\n").replace("\r", "\n"), tuple(attachments)


# --- entry point -----------------------------------------------------------------------------


def parse_message(
    raw: bytes,
    *,
    mailbox: str,
    source_id: str,
    folder: str | None = None,
    flags: Iterable[str] = (),
    categories: Iterable[str] = (),
    conversation_id: str | None = None,
    received_at: datetime | None = None,
) -> MailMessage:
    """Parse one raw mail. Never raises on any bytes; problems are listed in `defects`."""
    defects = _Defects()
    raw = bytes(raw)
    flag_set, category_tuple = frozenset(flags), tuple(categories)

    def attempt(body: bool) -> MailMessage:
        return _parse(
            raw,
            defects,
            body=body,
            mailbox=mailbox,
            source_id=source_id,
            folder=folder,
            flags=flag_set,
            categories=category_tuple,
            conversation_id=conversation_id,
            received_at=received_at,
        )

    try:
        return attempt(body=True)
    except Exception as exc:  # a bug here must cost one message its body, not the mailbox
        defects.add(f"parser-failed:{type(exc).__name__}")
    try:  # the headers alone, as for mail the stdlib cannot parse
        return attempt(body=False)
    except Exception as exc:  # and even that failed: the raw mail and what the source said
        defects.add(f"parser-failed:{type(exc).__name__}")
    return MailMessage(
        mailbox=mailbox,
        source_id=source_id,
        key=fallback_key(raw),
        message_id=None,
        in_reply_to=(),
        references=(),
        subject="",
        normalized_subject="",
        from_=None,
        sender=None,
        reply_to=(),
        to=(),
        cc=(),
        date=_date(None, received_at, _Defects()),
        text="",
        attachments=(),
        headers=(),
        size=len(raw),
        raw=raw,
        conversation_id=conversation_id,
        flags=flag_set,
        categories=category_tuple,
        folder=folder,
        defects=defects.items(),
    )


def _parse(
    raw: bytes,
    defects: _Defects,
    *,
    body: bool,
    mailbox: str,
    source_id: str,
    folder: str | None,
    flags: frozenset[str],
    categories: tuple[str, ...],
    conversation_id: str | None,
    received_at: datetime | None,
) -> MailMessage:
    parsed = _modern_names(raw, defects)
    tree, shell = _parse_tree(parsed, defects) if body else (None, None)
    message = tree if tree is not None else _header_tree(parsed)
    headers = _Headers(message, defects)
    subject = " ".join(headers.decoded("subject").split())
    if len(subject) > MAX_SUBJECT_CHARS:
        defects.add("subject-truncated")
        subject = clip(subject, MAX_SUBJECT_CHARS)
    linesep = "\r\n" if b"\r\n" in raw[:65536] else "\n"
    text = ""
    attachments: tuple[Attachment, ...] = ()
    if tree is not None and shell is not None:
        text, attachments = _body_and_attachments(tree, shell, linesep, defects)
    message_id = _message_id(headers.raw("message-id"))
    if message_id is None:
        defects.add("message-id-missing")
        key = fallback_key(raw)
    else:
        key = id_key(message_id)
    from_ = _addresses(headers.raw_all("from"), defects)
    sender = _addresses(headers.raw_all("sender"), defects)
    return MailMessage(
        mailbox=mailbox,
        source_id=source_id,
        key=key,
        message_id=message_id,
        # Each id costs a lookup when mapped: a few are plenty, thousands are an attack.
        in_reply_to=_id_list(headers.raw("in-reply-to"))[:MAX_REFERENCES],
        references=_references(headers.raw("references")),
        subject=_valid(subject),
        normalized_subject=_valid(normalize_subject(subject)),
        from_=from_[0] if from_ else None,
        sender=sender[0] if sender else None,
        reply_to=_addresses(headers.raw_all("reply-to"), defects),
        to=_addresses(headers.raw_all("to"), defects),
        cc=_addresses(headers.raw_all("cc"), defects),
        date=_date(headers.raw("date"), received_at, defects),
        text=_valid(text),
        attachments=attachments,
        headers=headers.all_decoded(),
        size=len(raw),
        raw=raw,
        conversation_id=conversation_id,
        flags=flags,
        categories=categories,
        folder=folder,
        defects=defects.items(),
    )


def mail_bodies(raw: bytes) -> tuple[str | None, str | None]:
    """The first text/plain and the first text/html body of `raw` (not attachments), decoded,
    each None when the mail has none: what a reader of the whole mail is shown. Never raises."""
    defects = _Defects()
    message, shell = _parse_tree(bytes(raw), defects)
    if message is None:
        return None, None
    plain: str | None = None
    html: str | None = None
    for info in _leaves(message, defects, shell):
        if info.maintype == "message" or info.is_attachment:
            continue
        if info.content_type == "text/plain" and plain is None:
            plain = _valid(_text_of(info, defects))
        elif info.content_type == "text/html" and html is None:
            html = _valid(_text_of(info, defects))
    return plain, html
