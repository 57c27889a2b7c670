"""Table `Notices`: the notices a filing decided on (acknowledge, reject, forward), one row each
(PK the message key, RK `keys.notice_row`: its place in the plan and its kind), and what
became of each when the outbound stage sent or refused it."""

from __future__ import annotations

from datetime import datetime

from ..core.contracts import FilingPlan
from .keys import notice_row
from .tables import Table


def record(table: Table, plan: FilingPlan, now: datetime) -> None:
    """The plan's notices, in one transaction per 100 (a redelivered plan rewrites them)."""
    table.upsert_batch(
        {
            "PartitionKey": plan.message_key,
            "RowKey": notice_row(i, n.kind),
            "Kind": n.kind,
            "To": n.to,
            "Reason": n.reason[:1000],
            "Sent": n.sent,
            "Mailbox": plan.mailbox,
            "At": now,
            "RecordType": plan.record.type if plan.record else None,
            "RecordKey": plan.record.key if plan.record else None,
        }
        for i, n in enumerate(plan.notices)
    )


def sent(table: Table, message_key: str, row: str, now: datetime, message_id: str) -> None:
    table.upsert(
        {
            "PartitionKey": message_key,
            "RowKey": row,
            "Sent": True,
            "SentAt": now,
            "SentMessageId": message_id[:1000],
        }
    )


def refused(table: Table, message_key: str, row: str, why: str) -> None:
    table.upsert({"PartitionKey": message_key, "RowKey": row, "Sent": False, "Refused": why[:1000]})
