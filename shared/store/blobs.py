"""Raw mail in Blob Storage, addressed by content so that storing it twice is harmless.

Big mail is streamed: uploads go in blocks (account.py sets 4 MiB blocks for anything larger),
attachments from an iterator of decoded slices, downloads into one buffer of the blob's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, unquote

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings, StorageStreamDownloader

RAW_CONTAINER = "raw"
BLOCK_BYTES = 4 * 1024 * 1024  # account.py: blobs larger than this go up in blocks of it

# Ingested mail with a Message-ID is stored under "m/<message key>/": one listing of that prefix
# tells whether a copy of the message was ingested (before it was queued), which is what the map
# stage asks of mail it refers to that is not filed yet. Its metadata names the copy.
MESSAGE_PREFIX = "m/"
_META_VALUE = 1000  # characters of each metadata value (percent-encoded; 8 KiB for all)


def raw_blob_name(data: bytes, message_key: str | None = None) -> str:
    """Raw mail's name: its SHA-256, under its message key when it has one (ingested mail:
    see `Blobs.ingested`), else under the digest's first two hex digits."""
    digest = hashlib.sha256(data).hexdigest()
    if message_key is not None:
        return f"{MESSAGE_PREFIX}{message_key}/{digest}.eml"
    return f"{digest[:2]}/{digest}.eml"


@dataclass(frozen=True)
class IngestedCopy:
    """A copy of a message as ingest stored it (the first copy, when copies share their bytes),
    and its blob once stored."""

    mailbox: str | None
    source_id: str | None
    folder: str | None
    ingested_at: datetime | None
    blob: str = ""


def _meta(value: str) -> str:
    """Metadata travels as HTTP headers: ASCII only, so everything else is percent-encoded."""
    return quote(value, safe="")[:_META_VALUE]


class Blobs:
    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service

    def create(self, container: str = RAW_CONTAINER) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._service.create_container(container)

    def _put_once(
        self,
        name: str,
        data: bytes | Iterable[bytes],
        settings: ContentSettings,
        length: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Content-addressed: a name already taken holds these very bytes, so a repeat is a
        no-op, never an overwrite."""
        client = self._service.get_blob_client(RAW_CONTAINER, name)
        if length is None and isinstance(data, bytes):
            length = len(data)
        if (length or 0) > BLOCK_BYTES and client.exists():
            return name  # a big repeat costs one request, not its upload refused at the end
        with contextlib.suppress(ResourceExistsError):
            client.upload_blob(
                data,
                length=length,
                overwrite=False,
                content_settings=settings,
                metadata=metadata,
            )
        return name

    def put_raw(
        self, data: bytes, message_key: str | None = None, copy: IngestedCopy | None = None
    ) -> str:
        """Store raw mail under its SHA-256 (and message key) and return the blob name; `copy`
        (mailbox, source id, folder, when) goes in its metadata."""
        metadata = None
        if copy is not None:
            metadata = {
                "mailbox": _meta(copy.mailbox or ""),
                "sourceid": _meta(copy.source_id or ""),
                "folder": _meta(copy.folder or ""),
                "ingested": copy.ingested_at.isoformat() if copy.ingested_at else "",
            }
        return self._put_once(
            raw_blob_name(data, message_key),
            data,
            ContentSettings(content_type="message/rfc822"),
            metadata=metadata,
        )

    def ingested(self, message_key: str) -> list[IngestedCopy]:
        """The copies of a message ingest stored (one request): whether it is on its way."""
        container = self._service.get_container_client(RAW_CONTAINER)
        out = []
        for blob in container.list_blobs(
            name_starts_with=f"{MESSAGE_PREFIX}{message_key}/", include=["metadata"]
        ):
            meta = blob.metadata or {}
            at = meta.get("ingested")
            out.append(
                IngestedCopy(
                    blob=blob.name,
                    mailbox=unquote(meta["mailbox"]) if meta.get("mailbox") else None,
                    source_id=unquote(meta["sourceid"]) if meta.get("sourceid") else None,
                    folder=unquote(meta["folder"]) if meta.get("folder") else None,
                    ingested_at=_when(at) if at else None,
                )
            )
        return out

    def put_text(self, text: str) -> str:
        """Long text (a reply too long for a table property) under its SHA-256."""
        data = text.encode("utf-8")
        name = "text/" + hashlib.sha256(data).hexdigest() + ".txt"
        return self._put_once(name, data, ContentSettings(content_type="text/plain; charset=utf-8"))

    def put_attachment(self, data: bytes, content_type: str, filename: str | None) -> str:
        """An attachment under its SHA-256, always served as a download, never rendered."""
        return self.put_attachment_stream(
            hashlib.sha256(data).hexdigest(), iter((data,)), len(data), content_type, filename
        )

    def put_attachment_stream(
        self,
        digest: str,
        chunks: Iterator[bytes],
        size: int,
        content_type: str,
        filename: str | None,
    ) -> str:
        """An attachment whose SHA-256 and size the caller has read already, uploaded from
        `chunks` in blocks, so it is never whole in memory."""
        settings = ContentSettings(
            content_type=content_type if _TOKEN_TYPE.fullmatch(content_type) else _BYTES,
            content_disposition=_disposition(filename),
        )
        return self._put_once("att/" + digest, chunks, settings, size)

    def get(self, name: str, container: str = RAW_CONTAINER) -> bytes | None:
        try:
            return _read(self._service.get_blob_client(container, name).download_blob())
        except ResourceNotFoundError:
            return None


_BYTES = "application/octet-stream"
_TOKEN_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")


def _disposition(filename: str | None) -> str:
    """`attachment` with the name as RFC 6266 gives it: HTTP headers are Latin-1 on the wire,
    so a name in another script goes as `filename*=UTF-8''...` beside an ASCII `filename`."""
    name = "".join(c for c in (filename or "attachment") if c.isprintable())[:200]
    ascii_name = "".join(c if c.isascii() and c not in '"\\' else "_" for c in name)
    if name == ascii_name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _when(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _read(downloader: StorageStreamDownloader[bytes]) -> bytes:
    """The blob's bytes, downloaded chunk by chunk and joined once (`readall` grows a BytesIO
    chunk by chunk, reallocating as it goes, then copies it out)."""
    parts = list(downloader.chunks())
    return parts[0] if len(parts) == 1 else b"".join(parts)
