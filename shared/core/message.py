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
    # Every value by lower-cased name, built on the first lookup: classify and decide ask for
    # some 30 headers a message, each a walk of all of them before.
    _by_name: dict[str, tuple[str, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # `thread_ids`, built on first use: a decision asks for it four times.
    _thread_ids: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def _index(self) -> dict[str, tuple[str, ...]]:
        index = self._by_name
        if index is None:
            lists: dict[str, list[str]] = {}
            for key, value in self.headers:
                lists.setdefault(key.lower(), []).append(value)
            index = {key: tuple(values) for key, values in lists.items()}
            object.__setattr__(self, "_by_name", index)  # a cache: the message stays the same
        return index

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), decoded, or None."""
        index = self._by_name
        values = (self._index() if index is None else index).get(name.lower())
        return values[0] if values else None

    def has_header(self, names: frozenset[str]) -> bool:
        """Whether any header of the lower-cased `names` is present: one test where a rule
        would look each up in turn."""
        index = self._by_name
        return not (self._index() if index is None else index).keys().isdisjoint(names)

    def header_all(self, name: str) -> tuple[str, ...]:
        index = self._by_name
        return (self._index() if index is None else index).get(name.lower(), ())

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this message answers, oldest first: References then In-Reply-To."""
        ids = self._thread_ids
        if ids is None:
            ids = tuple(dict.fromkeys((*self.references, *self.in_reply_to)))
            object.__setattr__(self, "_thread_ids", ids)  # a cache: the message stays the same
        return ids


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
