"""Map: parse the raw mail, gather what storage knows about it, decide, and queue the plan."""

from __future__ import annotations

import logging

from ..core.config import Config
from ..core.contracts import FilingPlan, InboundMessage, RecordRef
from ..core.decide import FiledMessage, Known, decide, thread_lookups
from ..core.message import MailMessage, id_key
from ..core.mime import parse_message
from ..store.errors import ContractError
from ..store.queues import decode
from ..store.stores import FILING, MESSAGES, Stores

log = logging.getLogger(__name__)


def gather(stores: Stores, message: MailMessage) -> Known:
    """Read the message index: this message's own entry, then its thread, newest first.

    The decision takes the newest filed Message-ID of the thread, so the search stops at the
    first hit: a reply usually costs one read.
    """
    table = stores.table(MESSAGES)
    own = table.get(message.key, "msg")
    filed = None
    if own is not None:
        filed = FiledMessage(
            record=RecordRef(type=own["RecordType"], key=own["RecordKey"]),
            mailbox=own["Mailbox"],
            source_id=own["SourceId"],
            folder=own.get("Folder"),
        )
        return Known(filed=filed)
    thread: dict[str, RecordRef] = {}
    for mid in reversed(thread_lookups(message)):
        entry = table.get(id_key(mid), "msg")
        if entry is not None:
            thread[mid] = RecordRef(type=entry["RecordType"], key=entry["RecordKey"])
            break
    return Known(thread=thread)


def map_inbound(stores: Stores, config: Config, body: bytes) -> FilingPlan:
    inbound = decode(body, InboundMessage)
    raw = stores.blobs.get(inbound.blob)
    if raw is None:
        raise ContractError(f"raw mail {inbound.blob} is not in Blob Storage")
    message = parse_message(
        raw,
        mailbox=inbound.mailbox,
        source_id=inbound.source_id,
        folder=inbound.folder,
        flags=inbound.flags,
        categories=inbound.categories,
        conversation_id=inbound.conversation_id,
        received_at=inbound.received_at,
    )
    plan = decide(message, gather(stores, message), config, blob=inbound.blob)
    stores.queues.send(FILING, plan)
    log.info(
        "map: mailbox=%s key=%s action=%s record=%s",
        message.mailbox,
        message.key[:40],
        plan.action,
        plan.record.key if plan.record else None,
    )
    return plan
