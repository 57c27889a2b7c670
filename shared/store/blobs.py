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

    def put_raw(self, data: bytes) -> str:
        """Store raw mail under its SHA-256 and return the blob name; a repeat is a no-op."""
        name = raw_blob_name(data)
        client = self._service.get_blob_client(RAW_CONTAINER, name)
        with contextlib.suppress(ResourceExistsError):
            client.upload_blob(
                data,
                overwrite=False,
                content_settings=ContentSettings(content_type="message/rfc822"),
            )
        return name

    def put_text(self, text: str) -> str:
        """Long text (a reply too long for a table property) under its SHA-256."""
        data = text.encode("utf-8")
        name = "text/" + hashlib.sha256(data).hexdigest() + ".txt"
        client = self._service.get_blob_client(RAW_CONTAINER, name)
        with contextlib.suppress(ResourceExistsError):
            client.upload_blob(
                data,
                overwrite=False,
                content_settings=ContentSettings(content_type="text/plain; charset=utf-8"),
            )
        return name

    def put_attachment(self, data: bytes, content_type: str, filename: str | None) -> str:
        """An attachment under its SHA-256, always served as a download, never rendered."""
        name = "att/" + hashlib.sha256(data).hexdigest()
        safe_name = "".join(
            c for c in (filename or "attachment") if c.isprintable() and c not in '"\\'
        )
        client = self._service.get_blob_client(RAW_CONTAINER, name)
        with contextlib.suppress(ResourceExistsError):
            client.upload_blob(
                data,
                overwrite=False,
                content_settings=ContentSettings(
                    content_type=content_type,
                    content_disposition=f'attachment; filename="{safe_name[:200]}"',
                ),
            )
        return name

    def get(self, name: str, container: str = RAW_CONTAINER) -> bytes | None:
        try:
            return self._service.get_blob_client(container, name).download_blob().readall()
        except ResourceNotFoundError:
            return None
