"""What an attachment really is, before it is stored: its size, and whether its bytes match
the type the sender declared. Nothing is ever opened, executed or rendered.

A file whose bytes are an executable, or do not match a declared image/PDF/archive type, is
stored as `application/octet-stream`: whoever downloads it gets bytes, not something a browser
or mail client would render or run.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024

# Leading bytes of the formats worth telling apart.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"MZ", "application/x-msdownload"),
    (b"\x7fELF", "application/x-executable"),
    (b"#!", "text/x-script"),
)
EXECUTABLE = {"application/x-msdownload", "application/x-executable", "text/x-script"}
_SNIFFABLE = {kind for _, kind in _MAGIC}
# Office documents are zip containers.
_ZIP_FAMILY = (
    "application/zip",
    "application/vnd.openxmlformats",
    "application/vnd.ms-",
    "application/epub",
    "application/vnd.oasis",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    store: bool
    content_type: str  # what the blob is stored as
    note: str | None  # why it differs from what was declared, or why it is not stored


def sniff(data: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


def check(declared: str, data: bytes, size: int | None = None) -> Verdict:
    """`data` is the attachment, or its first bytes when `size` gives the whole size (the
    content is only sniffed by its start)."""
    size = len(data) if size is None else size
    if size > MAX_ATTACHMENT_BYTES:
        return Verdict(
            False,
            declared,
            f"{size} bytes is over the "
            f"{MAX_ATTACHMENT_BYTES} byte limit: kept in the raw mail only",
        )
    found = sniff(data)
    declared = declared.lower()
    if found in EXECUTABLE:
        return Verdict(True, "application/octet-stream", f"content is {found}; stored as bytes")
    if found is None and declared in _SNIFFABLE:
        return Verdict(
            True,
            "application/octet-stream",
            f"declared {declared} but the content is not; stored as bytes",
        )
    if found is None or found == declared:
        return Verdict(True, declared if found else _safe(declared), None)
    if found == "application/zip" and declared.startswith(_ZIP_FAMILY):
        return Verdict(True, declared, None)
    return Verdict(
        True,
        "application/octet-stream",
        f"declared {declared} but the content is {found}; stored as bytes",
    )


def _safe(declared: str) -> str:
    """Types a browser renders actively are never served as themselves."""
    if declared in (
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/javascript",
        "application/javascript",
        "application/x-shockwave-flash",
    ):
        return "application/octet-stream"
    return declared
