"""Table MailboxActions: what was done to one copy of a mail in its mailbox (or only recorded),
in the message's partition, a row per action (keys.action_row)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..core.contracts import MailboxAction
from .keys import action_row
from .stores import ACTIONS, Stores


def note(
    stores: Stores,
    message_key: str,
    mailbox: str,
    source_id: str,
    results: Sequence[tuple[MailboxAction, bool, str]],
    now: datetime,
) -> None:
    """`results`: each action, whether it was done, and the source's detail."""
    stores.table(ACTIONS).upsert_batch(
        [
            {
                "PartitionKey": message_key,
                "RowKey": action_row(mailbox, source_id, action.action, i),
                "Mailbox": mailbox,
                "Action": action.action,
                "Target": action.folder or action.category,
                "Done": done,
                "Detail": detail[:1000],
                "At": now,
            }
            for i, (action, done, detail) in enumerate(results)
        ]
    )
