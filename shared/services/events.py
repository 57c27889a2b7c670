"""Downstream events, emitted by the file stage once a filing is committed.

Emitting only queues the event (queue `events`); the events function fans it out to the
configured webhooks and the optional Storage queue. Ids are stable, so a redelivered plan emits
the same events again and consumers drop the ids they have seen: at-least-once, like Graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from ..core.config import Config
from ..core.contracts import Event, FilingPlan
from ..store.stores import EVENTS, Stores


def enabled(config: Config) -> bool:
    return bool(config.events.webhooks or config.events.queue)


def event_id(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def filing_events(
    plan: FilingPlan, *, created: bool, display_id: str | None, now: datetime
) -> list[Event]:
    """The events one committed filing plan stands for."""
    assert plan.record is not None
    record, key = plan.record, plan.message_key
    common = {"record": record, "display_id": display_id, "message_key": key, "occurred_at": now}
    out: list[Event] = []
    if created:
        out.append(
            Event(
                id=event_id("record.created", record.type, record.key),
                type="record.created",
                data={"title": plan.title, "mailbox": plan.mailbox},
                **common,
            )
        )
    elif plan.fields or plan.tags or plan.status:
        out.append(
            Event(
                id=event_id("record.updated", record.type, record.key, key),
                type="record.updated",
                data={"status": plan.status, **{f"field.{k}": v for k, v in plan.fields.items()}},
                **common,
            )
        )
    entry = plan.entry
    out.append(
        Event(
            id=event_id("message.filed", record.type, record.key, key),
            type="message.filed",
            data={
                "direction": entry.direction if entry else None,
                "kind": plan.kind,
                "subject": entry.subject[:500] if entry else None,
                "from": entry.from_ if entry else None,
                "mailbox": plan.mailbox,
            },
            **common,
        )
    )
    return out


def emit(stores: Stores, events: Iterable[Event]) -> None:
    for event in events:
        stores.queues.send(EVENTS, event)
