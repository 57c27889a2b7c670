"""The queue-triggered delivery stages: events -> deliveries -> webhooks. Thin: the work is in
pipeline/delivery.py."""

from __future__ import annotations

import azure.functions as func

from ..pipeline.delivery import DELIVERY_QUEUE, deliver, fan_out
from ..store.stores import EVENTS
from .stage import now, run_stage

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=EVENTS, connection="AzureWebJobsStorage")
def fan_out_events(msg: func.QueueMessage) -> None:
    run_stage(msg, EVENTS, "events", lambda ctx, body: fan_out(ctx.stores, ctx.config, body))


@bp.queue_trigger(arg_name="msg", queue_name=DELIVERY_QUEUE, connection="AzureWebJobsStorage")
def deliver_events(msg: func.QueueMessage) -> None:
    run_stage(
        msg,
        DELIVERY_QUEUE,
        "deliver",
        lambda ctx, body: deliver(ctx.stores, ctx.config, body, now=now()),
    )
