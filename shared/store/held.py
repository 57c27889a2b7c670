"""Table Held: a mailbox's partition, a row per message held (keys.held_row) with what is
needed to map it again when released."""

from __future__ import annotations

from datetime import datetime

from ..core.contracts import FilingPlan
from .keys import held_row
from .messages import put_own_row, unfiled_columns
from .stores import HELD, Stores


def hold(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    row = {
        "PartitionKey": plan.mailbox,
        "RowKey": held_row(plan.message_key),
        **unfiled_columns(plan, now),
        "Sender": plan.sender,
    }
    put_own_row(stores.table(HELD), row, plan)
