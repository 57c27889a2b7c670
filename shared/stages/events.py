"""Queue `events`: each event the file stage emitted becomes one delivery per matching webhook
(queue `deliveries`), and goes to the configured Storage queue, if any."""

from __future__ import annotations

import logging
from datetime import datetime

from ..core.config import Config, Webhook
from ..core.contracts import Event
from ..services.context import AppContext
from ..services.webhooks import DELIVERY_QUEUE, Delivery, ensure_queues
from ..store.queues import decode
from ..store.stores import Stores

log = logging.getLogger(__name__)


def matches(webhook: Webhook, event: Event) -> bool:
    if webhook.events and event.type not in webhook.events:
        return False
    if webhook.record_types:
        return event.record is not None and event.record.type in webhook.record_types
    return True


def fan_out(stores: Stores, config: Config, body: bytes) -> list[str]:
    """Queue an `events` message for each matching webhook; the webhooks' names."""
    event = decode(body, Event)
    ensure_queues(stores, config.events.queue)
    if config.events.queue:
        stores.queues.send(config.events.queue, event)
    names = []
    for webhook in config.events.webhooks:
        if matches(webhook, event):
            stores.queues.send(DELIVERY_QUEUE, Delivery(event=event, webhook=webhook.name))
            names.append(webhook.name)
    log.info("events: %s %s to %d webhook(s)", event.type, event.id, len(names))
    return names


STAGE = "events"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:  # noqa: ARG001
    """A message of queue `events` (called by its trigger: functions/stage.py)."""
    return fan_out(ctx.stores, ctx.config, body)
