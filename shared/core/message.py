"""The message model: one mail as Mailfiler sees it, whatever mailbox it came from.

Immutable on purpose: the map stage's decisions are pure functions of a `MailMessage`, and a
message that cannot change cannot make two decisions disagree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

# Table Storage keys are limited to 1 KiB. Hex doubles the length, so a Message-ID longer than
# this many UTF-8 bytes is keyed by its SHA-256 instead (prefix "h", never a hex digit).
MAX_HEX_ID_BYTES = 200


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed mailbox address. `email` is the addr-spec with the domain lower-cased."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True, slots=True)
class Attachment:
    """Metadata of one attachment or inline part; the bytes stay in the raw mail."""

    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True, slots=True)
class MailMessage:
    """One message, parsed. `raw` always holds the exact bytes the source gave us."""

    mailbox: str
    source_id: str
    key: str
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    normalized_subject: str
    from_: Address | None
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    text: str
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]
    size: int
    raw: bytes = field(repr=False)
    conversation_id: str | None = None
    flags: frozenset[str] = frozenset()
    categories: tuple[str, ...] = ()
    folder: str | None = None
    defects: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), decoded, or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this message answers, oldest first: References then In-Reply-To."""
        seen: dict[str, None] = {}
        for mid in (*self.references, *self.in_reply_to):
            seen.setdefault(mid, None)
        return tuple(seen)


def id_key(message_id: str) -> str:
    """The storage key of a Message-ID (without angle brackets): its UTF-8 hex, or `h` + SHA-256.

    Hex keeps keys reversible and free of the characters Table Storage forbids in keys.
    """
    data = message_id.encode("utf-8", "surrogateescape")
    if len(data) <= MAX_HEX_ID_BYTES:
        return data.hex()
    return "h" + hashlib.sha256(data).hexdigest()


def fallback_key(raw: bytes) -> str:
    """The key of mail without a Message-ID: `s` + SHA-256 of its raw bytes (the digest that
    names its blob). Only the very same bytes share it, so two different mails can never merge,
    whatever the parser could read of them; the same download seen again still dedupes."""
    return "s" + hashlib.sha256(raw).hexdigest()
