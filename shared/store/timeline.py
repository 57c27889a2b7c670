"""Table Timeline: a record's partition (keys.record_partition) holds its entries, one per mail
(keys.timeline_row: they start with a digit), then beside them under "~" its audit rows
(store/audit_trail.py) and participants (keys.participant_row), so filing a mail writes all of
them in one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

from ..core.contracts import RecordRef, TimelineEntry
from .keys import AUDIT_ROWS, participant_row, record_partition, timeline_row
from .stores import TIMELINE, Stores
from .tables import Entity, transact_each


def participant_rows(record: RecordRef, addresses: Iterable[str]) -> list[Entity]:
    """The addresses on a record's thread, which gives them standing on it."""
    partition = record_partition(record)
    return [
        {"PartitionKey": partition, "RowKey": participant_row(address), "Address": address}
        for address in addresses
    ]


def on_thread(stores: Stores, record: RecordRef, address: str) -> bool:
    row = stores.table(TIMELINE).get(record_partition(record), participant_row(address))
    return row is not None


def write_entry(
    stores: Stores,
    record: RecordRef,
    entry: TimelineEntry,
    *,
    message_key: str,
    mailbox: str,
    folder: str | None,
    blob: str,
    side: Sequence[Entity] = (),
) -> None:
    """A mail's entry and the rows beside it (`side`, of the same partition), in one
    transaction. The entry is inserted, never replaced: a mail edited after it was filed
    (Graph reports edits as updates) does not rewrite the record's history, and a redelivery
    changes nothing."""
    row = {
        "PartitionKey": record_partition(record),
        "RowKey": timeline_row(entry.date, message_key),
        "MessageKey": message_key[:400],
        "Direction": entry.direction,
        "MessageId": (entry.message_id or "")[:1000],
        "Subject": entry.subject,
        "From": entry.from_,
        "To": ", ".join(entry.to)[:8000],
        "Cc": ", ".join(entry.cc)[:8000],
        "Date": entry.date,
        "Snippet": entry.snippet,
        "Text": entry.text,
        "TextBlob": entry.text_blob,
        "Kind": entry.kind,
        "Attachments": json.dumps([a.model_dump(exclude_none=True) for a in entry.attachments])[
            :30000
        ],
        "Mailbox": mailbox,
        "Folder": folder,
        "Blob": blob,
        "Flag": entry.flag,
    }
    transact_each(stores.table(TIMELINE), [[("insert", row), *(("upsert", r) for r in side)]])


def move_entry(stores: Stores, record: RecordRef, row_key: str, folder: str | None) -> None:
    """The mail of entry `row_key` is now in `folder`."""
    stores.table(TIMELINE).upsert(
        {"PartitionKey": record_partition(record), "RowKey": row_key, "Folder": folder}
    )


def entries(stores: Stores, record: RecordRef) -> Iterator[Entity]:
    """The record's entries, oldest first (not the rows beside them)."""
    yield from stores.table(TIMELINE).partition(record_partition(record), row_before=AUDIT_ROWS)
