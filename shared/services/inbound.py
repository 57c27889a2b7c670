"""An inbound queue message's mail: its raw bytes from Blob Storage, parsed with what the source
saw."""

from __future__ import annotations

from ..core.contracts import (
    InboundMessage,
)
from ..core.message import MailMessage
from ..core.mime import parse_message
from ..store.errors import ContractError
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
