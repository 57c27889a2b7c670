"""Table `Ingest`: one row per mail a mailbox handed over (PK the mailbox, RK
`keys.source_key` of its source id), with its blob and the folder it was last seen in. The
ingest service writes a row once the mail is queued; the Graph fetch stage reads it to tell a
new mail from a known one and notes where a known one moved."""

from __future__ import annotations

from datetime import datetime
from typing import overload

from .keys import source_key
from .tables import Entity, Table


def row(mailbox: str, source_id: str, blob: str, folder: str | None, now: datetime) -> Entity:
    """The row that notes a mail as queued (the caller writes it, alone or in a batch)."""
    return {
        "PartitionKey": mailbox,
        "RowKey": source_key(source_id),
        "SourceId": source_id[:1000],
        "Blob": blob,
        "Folder": folder,
        "IngestedAt": now,
    }


@overload
def done(table: Table, mailbox: str) -> set[str]: ...
@overload
def done(table: Table, mailbox: str, *, at_most: int) -> set[str] | None: ...


def done(table: Table, mailbox: str, *, at_most: int | None = None) -> set[str] | None:
    """The RowKeys (`keys.source_key`) of every mail the mailbox handed over: one read (a
    request per 1,000). `at_most`: None once the partition holds more rows than that (the read
    stops there)."""
    keys: set[str] = set()
    for entity in table.partition(mailbox, select=["RowKey"]):
        keys.add(entity["RowKey"])
        if at_most is not None and len(keys) > at_most:
            return None
    return keys


def get(table: Table, mailbox: str, source_id: str) -> Entity | None:
    return table.get(mailbox, source_key(source_id))


def set_folder(table: Table, mailbox: str, row_key: str, folder: str) -> None:
    """Where a known mail is now (a move by the user, or one of ours)."""
    table.upsert({"PartitionKey": mailbox, "RowKey": row_key, "Folder": folder})
