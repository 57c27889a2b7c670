"""Where each polled mailbox goes on from: one row per watched folder, written by the poll stage
once what the folder's poll listed is safely queued. Sources never write them: they get the
cursor as input and return the next one (`sources/base.py`, `Sighting`).

A folder's cursor is opaque outside its source (IMAP: UIDVALIDITY, the last UID, the flagged
UIDs; EWS: a sync state; Graph: a delta link), kept as table properties of plain values. Rows
and tables are the ones the sources used to write, so a deployment goes on where it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .keys import CURSOR_ROWS, after_prefix, cursor_row
from .names import EWS_STATE, GRAPH_STATE, IMAP_STATE
from .stores import Stores

CursorValue = str | int | bool | None
FolderCursor = Mapping[str, CursorValue]  # property name -> value (None: not kept)
Cursor = Mapping[str, FolderCursor]  # folder (as the source names it) -> its cursor
TABLES = {"imap": IMAP_STATE, "ews": EWS_STATE, "graph": GRAPH_STATE}
_OURS = ("PartitionKey", "RowKey", "Folder", "At", "_etag")  # not part of the cursor


class Cursors:
    """The cursor rows of one mailbox. Kinds without a cursor (local folders) load nothing
    and refuse to save one."""

    def __init__(self, stores: Stores, mailbox: str, kind: str) -> None:
        self.stores = stores
        self.mailbox = mailbox
        self.kind = kind

    def load(self) -> dict[str, dict[str, CursorValue]]:
        """Every folder's cursor as last saved, in one range query of the partition."""
        prefix = CURSOR_ROWS.get(self.kind)
        if prefix is None:
            return {}
        rows = self.stores.table(TABLES[self.kind]).partition(
            self.mailbox, row_from=prefix, row_before=after_prefix(prefix)
        )
        out: dict[str, dict[str, CursorValue]] = {}
        for row in rows:
            folder = _folder(self.kind, row)
            if folder:
                out[folder] = {k: v for k, v in row.items() if k not in _OURS and _plain(v)}
        return out

    def save(self, cursor: Cursor, now: datetime) -> None:
        """Store the folders' new cursors (folders not named keep theirs)."""
        if not cursor:
            return
        if self.kind not in TABLES:
            raise ValueError(f"a {self.kind} mailbox keeps no cursor")
        table = self.stores.table(TABLES[self.kind])
        for folder, properties in cursor.items():
            row: dict[str, Any] = {
                **properties,
                "PartitionKey": self.mailbox,
                "RowKey": cursor_row(self.kind, folder),
                "Folder": folder,
                "At": now,
            }
            table.upsert(row)


def _folder(kind: str, row: Mapping[str, Any]) -> str | None:
    """The folder a row is about: its `Folder`, or (Graph rows written before it was kept)
    the name in the RowKey."""
    folder = row.get("Folder")
    if isinstance(folder, str) and folder:
        return folder
    if kind == "graph":
        return str(row["RowKey"]).removeprefix(CURSOR_ROWS[kind]) or None
    return None


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | bool)
