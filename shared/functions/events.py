"""The queue-triggered delivery stages: events -> deliveries -> webhooks. Thin: each trigger
names its stage module (shared/stages/), imported when a message comes (functions/stage.py)."""

from __future__ import annotations

import azure.functions as func

from ..store.names import DELIVERIES, EVENTS
from .stage import Stage, stage

bp = func.Blueprint()


@stage(bp, queue=EVENTS)
def fan_out_events() -> Stage:
    """One event: one delivery per matching webhook, and the configured Storage queue."""
    from ..stages import events

    return events


@stage(bp, queue=DELIVERIES)
def deliver_events() -> Stage:
    """POST one delivery; retried with back-off, then dead-lettered."""
    from ..stages import deliveries

    return deliveries
