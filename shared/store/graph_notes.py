"""What a Graph mailbox's source keeps between calls in `GraphState` (partition: the mailbox),
besides its delta links (store/cursors.py): the folder id of each move target (RK
`folder-<hash of the path>`), and per message the version last seen, its categories and folder,
and the changeKeys our own PATCH and move made (RK `msg-<hash of the id>`). The source reads and
writes them through this object only, never the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .keys import graph_message_row, graph_target_row
from .names import GRAPH_STATE
from .stores import Stores


class GraphNotes:
    def __init__(self, stores: Stores, mailbox: str) -> None:
        self.stores = stores
        self.mailbox = mailbox

    def target(self, path: str) -> str | None:
        """The folder id kept for move target `path`, if any."""
        row = self.stores.table(GRAPH_STATE).get(self.mailbox, graph_target_row(path))
        stored = row.get("FolderId") if row else None
        if isinstance(stored, str) and stored and row and row.get("Path") == path:
            return stored
        return None

    def keep_target(self, path: str, folder_id: str, now: datetime) -> None:
        self.stores.table(GRAPH_STATE).upsert(
            {
                "PartitionKey": self.mailbox,
                "RowKey": graph_target_row(path),
                "Path": path,
                "FolderId": folder_id,
                "At": now,
            }
        )

    def forget_target(self, path: str) -> None:
        self.stores.table(GRAPH_STATE).delete(self.mailbox, graph_target_row(path))

    def message(self, source_id: str) -> dict[str, Any] | None:
        """What was noted about one message (`Seen`, `Categories`, `FolderId`, `Folder`,
        `Own`), or None."""
        return self.stores.table(GRAPH_STATE).get(self.mailbox, graph_message_row(source_id))

    def note_message(
        self,
        source_id: str,
        fields: Mapping[str, Any],
        own: Sequence[str],
        now: datetime,
        *,
        keep_own: int,
    ) -> None:
        """Note `fields` about a message; `own` changeKeys join those kept (the newest
        `keep_own`)."""
        row: dict[str, Any] = {
            **fields,
            "PartitionKey": self.mailbox,
            "RowKey": graph_message_row(source_id),
            "At": now,
        }
        if own:
            before = self.message(source_id) or {}
            keys = [k for k in str(before.get("Own") or "").split() if k not in own]
            row["Own"] = " ".join([*keys, *own][-keep_own:])
        self.stores.table(GRAPH_STATE).upsert(row)
