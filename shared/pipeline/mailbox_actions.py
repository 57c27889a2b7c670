"""Acting on mail in its mailbox (after filing, for retention, on failure), and keeping a note.

Every action goes through the source adapter; what it did (or only recorded, for local files)
lands in `MailboxActions` and in the audit trail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from ..core.contracts import MailboxAction, RecordRef
from ..sources.base import ActionResult, MailboxSource
from ..store.stores import ACTIONS, Stores
from .audit import Actor, audit

MAILFILER = Actor(name="mailfiler", source="pipeline")


def sighting_row(mailbox: str, source_id: str) -> str:
    return "s-" + hashlib.sha256(f"{mailbox}\x00{source_id}".encode()).hexdigest()[:32]


def act(
    stores: Stores,
    source: MailboxSource,
    *,
    mailbox: str,
    source_id: str,
    message_key: str,
    record: RecordRef | None,
    actions: Sequence[MailboxAction],
    why: str,
    now: datetime,
) -> list[ActionResult]:
    """Carry out `actions` on one mail and note the outcome. Errors of the source propagate."""
    results = source.apply(source_id, actions)
    done = ", ".join(f"{r.action.action}{'' if r.done else ' (recorded)'}" for r in results)
    audit(stores, MAILFILER, "mailbox_action", record, f"{mailbox}: {done} {why}", now)
    stores.table(ACTIONS).upsert_batch(
        [
            {
                "PartitionKey": message_key,
                "RowKey": f"{sighting_row(mailbox, source_id)}-{r.action.action}-{i}",
                "Mailbox": mailbox,
                "Action": r.action.action,
                "Target": r.action.folder or r.action.category,
                "Done": r.done,
                "Detail": r.detail[:1000],
                "At": now,
            }
            for i, r in enumerate(results)
        ]
    )
    return results
