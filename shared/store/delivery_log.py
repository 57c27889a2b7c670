"""Table `EventDeliveries`: what came of one event's delivery to one webhook (PK the event id,
RK the webhook's name): `delivered`, `retrying`, `dead` (with the queue message itself, so it
can be replayed unchanged) or `replayed`. Each attempt replaces the row whole."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from .tables import Entity, Table, check_key, from_storage


def get(table: Table, event_id: str, webhook: str) -> Entity | None:
    return table.get(event_id, webhook)


def put(
    table: Table,
    event_id: str,
    webhook: str,
    *,
    status: str,
    event_type: str,
    attempt: int,
    code: int | None,
    now: datetime,
    **extra: Any,
) -> None:
    """The delivery's row after an attempt, replacing what an earlier attempt wrote."""
    table.upsert(
        {
            "PartitionKey": event_id,
            "RowKey": webhook,
            "Status": status,
            "EventType": event_type,
            "Attempts": attempt,
            "LastStatusCode": code,
            "UpdatedAt": now,
            **extra,
        },
        mode="replace",
    )


def dead(table: Table, event_id: str | None = None) -> Iterator[Entity]:
    """Rows of dead deliveries: of one event, or all."""
    query, parameters = "Status eq @status", {"status": "dead"}
    if event_id:
        check_key("PartitionKey", event_id)
        query, parameters = query + " and PartitionKey eq @pk", {**parameters, "pk": event_id}
    return (from_storage(e) for e in table.client.query_entities(query, parameters=parameters))


def replayed(table: Table, row: Entity, now: datetime) -> None:
    """A dead delivery queued again (from its first attempt)."""
    table.upsert(
        {
            "PartitionKey": row["PartitionKey"],
            "RowKey": row["RowKey"],
            "Status": "replayed",
            "ReplayedAt": now,
        }
    )
