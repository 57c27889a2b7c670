"""The queue-triggered delivery stages: events -> deliveries -> webhooks. Thin: the work is in
pipeline/delivery.py."""

from __future__ import annotations

from datetime import UTC, datetime

import azure.functions as func

from ..pipeline.context import get_context
from ..pipeline.delivery import DELIVERY_QUEUE, deliver, fan_out
from ..pipeline.poison import max_dequeue_count, run_guarded
from ..store.stores import EVENTS

bp = func.Blueprint()
_MAX_DEQUEUE = max_dequeue_count()


def _now() -> datetime:
    return datetime.now(UTC)


@bp.queue_trigger(arg_name="msg", queue_name=EVENTS, connection="AzureWebJobsStorage")
def fan_out_events(msg: func.QueueMessage) -> None:
    ctx = get_context()
    run_guarded(
        ctx.stores,
        queue=EVENTS,
        stage="events",
        body=msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        now=_now,
        max_dequeue=_MAX_DEQUEUE,
        handler=lambda body: fan_out(ctx.stores, ctx.config, body),
    )


@bp.queue_trigger(arg_name="msg", queue_name=DELIVERY_QUEUE, connection="AzureWebJobsStorage")
def deliver_events(msg: func.QueueMessage) -> None:
    ctx = get_context()
    run_guarded(
        ctx.stores,
        queue=DELIVERY_QUEUE,
        stage="deliver",
        body=msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        now=_now,
        max_dequeue=_MAX_DEQUEUE,
        handler=lambda body: deliver(ctx.stores, ctx.config, body, now=_now()),
    )
