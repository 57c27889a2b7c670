"""Row and partition keys that more than one stage computes: one definition each."""

from __future__ import annotations

import hashlib


def short_hash(*parts: str, length: int = 32) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:length]


def contact_row(address: str) -> str:
    return address.lower().encode("utf-8", "surrogateescape").hex()[:1000]


def conversation_row(conversation_id: str) -> str:
    return short_hash(conversation_id)


def sender_partition(address: str) -> str:
    return short_hash(address.lower())


def activity_row(message_key: str) -> str:
    """One row per message, so a redelivered plan is not counted twice."""
    return short_hash(message_key)
