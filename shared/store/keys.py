"""Row and partition keys that more than one stage computes: one definition each."""

from __future__ import annotations

import hashlib
from datetime import datetime


def short_hash(*parts: str, length: int = 32) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:length]


def contact_row(address: str) -> str:
    return address.lower().encode("utf-8", "surrogateescape").hex()[:1000]


def conversation_row(conversation_id: str) -> str:
    return short_hash(conversation_id)


def sender_partition(address: str) -> str:
    return short_hash(address.lower())


def activity_row(when: datetime, message_key: str) -> str:
    return f"{when:%Y%m%dT%H%M%S}-{short_hash(message_key, length=16)}"
