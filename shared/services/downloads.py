"""Downloads: a record's attachments and a message's raw mail, from Blob Storage, as files.

What a browser gets must never be rendered as a page of ours: every download is
`Content-Disposition: attachment` (RFC 6266, the name in any script as RFC 5987's `filename*`
beside an ASCII fallback), `X-Content-Type-Options: nosniff`, and an attachment's Content-Type
is `application/octet-stream` unless its type is one a browser cannot run (no HTML, SVG, XML or
script). The blob a download serves is only ever one the record's timeline names: a URL never
names a blob.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..core.config import Config
from ..store import messages as message_rows
from ..store.keys import FILED
from ..store.stores import Stores
from .messages import key_candidates
from .records import RecordError, resolve, timeline

log = logging.getLogger(__name__)

OCTETS = "application/octet-stream"
# Types a browser shows but cannot run script in; anything else goes as bytes.
SAFE_TYPES = frozenset(
    {
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "audio/mpeg",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/webp",
        "text/csv",
        "text/plain",
        "video/mp4",
    }
)
# Message keys are hex (id_key), `h`/`s` + SHA-256 hex: anything else names no message.
_KEY = re.compile(r"[0-9A-Za-z_-]{1,512}")
_INDEX = re.compile(r"[0-9]{1,3}")
MAX_NAME = 200


@dataclass(frozen=True)
class Download:
    data: bytes
    content_type: str
    filename: str

    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": self.content_type,
            "Content-Disposition": content_disposition(self.filename),
            "X-Content-Type-Options": "nosniff",
            # Should a browser render it anyway: no script, no plugin, no framing.
            "Content-Security-Policy": "default-src 'none'; sandbox; frame-ancestors 'none'",
            "Cache-Control": "private, no-store",
            "Referrer-Policy": "no-referrer",
        }


def _clean_name(name: str) -> str:
    """The name without what could break a header or a file system: control and format
    characters, path separators; at most MAX_NAME characters; never empty."""
    kept = "".join(
        c
        for c in unicodedata.normalize("NFC", name)
        if unicodedata.category(c)[0] not in "CZ" or c == " "
    )
    kept = kept.replace("/", "_").replace("\\", "_").strip(" .")
    return kept[:MAX_NAME] or "attachment"


def ascii_fallback(name: str) -> str:
    """The name in ASCII for `filename=`: accents dropped (NFKD), other letters as `_`, and no
    quote or backslash (they would end or escape the quoted string)."""
    decomposed = unicodedata.normalize("NFKD", name)
    out = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\%' else "_"
        for c in decomposed
        if not unicodedata.combining(c)
    )
    return out or "attachment"


def content_disposition(filename: str) -> str:
    """`attachment` with RFC 6266's `filename` (ASCII) and, for any other name, `filename*`
    (RFC 5987: UTF-8, percent-encoded), which browsers prefer."""
    name = _clean_name(filename)
    fallback = ascii_fallback(name)
    if fallback == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def safe_type(content_type: str | None) -> str:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media if media in SAFE_TYPES else OCTETS


def _entry(stores: Stores, record: dict[str, Any], message_key: str) -> dict[str, Any]:
    if not _KEY.fullmatch(message_key):
        raise RecordError(404, "unknown_message", "no such message on this record")
    for entry in timeline(stores, record):
        if entry["message_key"] == message_key:
            return entry
    raise RecordError(404, "unknown_message", "no such message on this record")


def _blob(stores: Stores, name: str, what: str) -> bytes:
    data = stores.blobs.get(name)
    if data is None:
        log.error("downloads: blob %s of %s is missing", name[:100], what)
        raise RecordError(404, "blob_missing", f"the stored copy of {what} is gone")
    return data


def attachment(
    stores: Stores, config: Config, type_name: str, ident: str, message_key: str, index: str
) -> Download:
    """Attachment number `index` (from 0, as the timeline lists them) of a message on a record."""
    record = resolve(stores, config, type_name, ident)
    entry = _entry(stores, record, message_key)
    items = entry["attachments"]
    if not _INDEX.fullmatch(index) or int(index) >= len(items):
        raise RecordError(404, "unknown_attachment", "the message has no such attachment")
    item = items[int(index)]
    blob = item.get("blob") if isinstance(item, dict) else None
    if not isinstance(blob, str) or not blob.startswith("att/"):
        note = item.get("note") if isinstance(item, dict) else None
        raise RecordError(
            404, "not_stored", f"this attachment was not stored{f': {note}' if note else ''}"
        )
    data = _blob(stores, blob, f"attachment {index} of {record.get('DisplayId')}")
    name = item.get("filename") or f"attachment-{index}"
    return Download(data, safe_type(item.get("content_type")), str(name))


def record_raw(
    stores: Stores, config: Config, type_name: str, ident: str, message_key: str
) -> Download:
    """The raw mail (.eml) of a message on a record."""
    record = resolve(stores, config, type_name, ident)
    entry = _entry(stores, record, message_key)
    blob = entry.get("raw")
    if not isinstance(blob, str) or not blob:
        raise RecordError(404, "not_stored", "this message's raw mail was not stored")
    data = _blob(stores, blob, f"a mail of {record.get('DisplayId')}")
    return Download(
        data, "message/rfc822", f"{record.get('DisplayId') or 'mail'}-{blob_stem(blob)}.eml"
    )


def blob_stem(blob: str) -> str:
    return blob.rsplit("/", 1)[-1].removesuffix(".eml")[:12]


def message_raw(stores: Stores, key: str) -> Download:
    """The raw mail of a message Mailfiler has seen (filed or not), by its key or Message-ID."""
    for candidate in key_candidates(key):
        rows = [
            r for r in message_rows.rows(stores, candidate, ["RowKey", "Blob"]) if r.get("Blob")
        ]
        if rows:
            break
    else:
        raise RecordError(404, "unknown_message", "Mailfiler has no such message")
    row = next((r for r in rows if r["RowKey"] == FILED), rows[0])
    blob = str(row["Blob"])
    data = _blob(stores, blob, f"message {candidate[:40]}")
    return Download(data, "message/rfc822", f"{blob_stem(blob)}.eml")
