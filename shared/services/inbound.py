"""An inbound queue message's mail: its raw bytes from Blob Storage, parsed with what the source
saw."""

from __future__ import annotations

import json

from ..core.contracts import (
    InboundBundle,
    InboundMessage,
)
from ..core.message import MailMessage
from ..core.mime import parse_message
from ..store.errors import ContractError
from ..store.queues import decode
from ..store.stores import (
    Stores,
)


def parse_inbound(stores: Stores, inbound: InboundMessage) -> MailMessage:
    """The mail as it came inline (small mail: contracts.INLINE_RAW_BYTES), else as stored."""
    raw = inbound.raw if inbound.raw is not None else stores.blobs.get(inbound.blob)
    if raw is None:
        raise ContractError(f"raw mail {inbound.blob} is not in Blob Storage")
    return parse_message(
        raw,
        mailbox=inbound.mailbox,
        source_id=inbound.source_id,
        folder=inbound.folder,
        flags=inbound.flags,
        categories=inbound.categories,
        conversation_id=inbound.conversation_id,
        received_at=inbound.received_at,
    )


def bundle_of(body: bytes | str) -> InboundBundle | None:
    """The bundle an `inbound` message carries, or None for a message of one mail. A body
    that says it is a bundle (`"kind": "bundle"`) and is not a valid one raises ContractError
    (its reason names the bundle); any other body is left to be read as one mail."""
    named = '"mails"' in body if isinstance(body, str) else b'"mails"' in body
    if not named:
        return None
    try:
        return decode(body, InboundBundle)
    except ContractError:
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("kind") == "bundle":
            raise
        return None


def inbound_mails(body: bytes | str) -> tuple[InboundMessage, ...]:
    """Every mail an `inbound` message carries, in order (one, or a bundle's)."""
    bundle = bundle_of(body)
    return bundle.mails if bundle is not None else (decode(body, InboundMessage),)
