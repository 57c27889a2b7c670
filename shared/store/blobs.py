"""Raw mail in Blob Storage, addressed by content so that storing it twice is harmless."""

from __future__ import annotations

import contextlib
import hashlib

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

RAW_CONTAINER = "raw"


def raw_blob_name(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest}.eml"


class Blobs:
    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service

    def create(self, container: str = RAW_CONTAINER) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._service.create_container(container)

    def _put_once(self, name: str, data: bytes, settings: ContentSettings) -> str:
        """Content-addressed: a name already taken holds these very bytes, so a repeat is a
        no-op, never an overwrite."""
        client = self._service.get_blob_client(RAW_CONTAINER, name)
        with contextlib.suppress(ResourceExistsError):
            client.upload_blob(data, overwrite=False, content_settings=settings)
        return name

    def put_raw(self, data: bytes) -> str:
        """Store raw mail under its SHA-256 and return the blob name."""
        return self._put_once(
            raw_blob_name(data), data, ContentSettings(content_type="message/rfc822")
        )

    def put_text(self, text: str) -> str:
        """Long text (a reply too long for a table property) under its SHA-256."""
        data = text.encode("utf-8")
        name = "text/" + hashlib.sha256(data).hexdigest() + ".txt"
        return self._put_once(name, data, ContentSettings(content_type="text/plain; charset=utf-8"))

    def put_attachment(self, data: bytes, content_type: str, filename: str | None) -> str:
        """An attachment under its SHA-256, always served as a download, never rendered."""
        safe_name = "".join(
            c for c in (filename or "attachment") if c.isprintable() and c not in '"\\'
        )
        settings = ContentSettings(
            content_type=content_type,
            content_disposition=f'attachment; filename="{safe_name[:200]}"',
        )
        return self._put_once("att/" + hashlib.sha256(data).hexdigest(), data, settings)

    def get(self, name: str, container: str = RAW_CONTAINER) -> bytes | None:
        try:
            return self._service.get_blob_client(container, name).download_blob().readall()
        except ResourceNotFoundError:
            return None
