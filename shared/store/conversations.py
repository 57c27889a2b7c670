"""Table Conversations: a mailbox's partition, a row per conversation (keys.conversation_row:
the source's conversation id, hashed) naming the record its mail is filed on."""

from __future__ import annotations

from ..core.contracts import RecordRef
from .keys import conversation_row
from .stores import CONVERSATIONS, Stores


def link(stores: Stores, mailbox: str, conversation_id: str, record: RecordRef) -> None:
    stores.table(CONVERSATIONS).upsert(
        {
            "PartitionKey": mailbox,
            "RowKey": conversation_row(conversation_id),
            "RecordType": record.type,
            "RecordKey": record.key,
        }
    )


def record_of(stores: Stores, mailbox: str, conversation_id: str) -> RecordRef | None:
    row = stores.table(CONVERSATIONS).get(mailbox, conversation_row(conversation_id))
    return RecordRef(type=row["RecordType"], key=row["RecordKey"]) if row is not None else None
