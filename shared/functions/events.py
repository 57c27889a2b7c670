"""The queue-triggered delivery stages: events -> deliveries -> webhooks. Thin: the work is in
pipeline/delivery.py, imported when a message comes (see function_app.py)."""

from __future__ import annotations

import azure.functions as func

from ..store.names import DELIVERIES, EVENTS
from .loading import load
from .stage import now, run_stage

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=EVENTS, connection="AzureWebJobsStorage")
def fan_out_events(msg: func.QueueMessage) -> None:
    load()
    from ..pipeline.delivery import fan_out

    run_stage(msg, EVENTS, "events", lambda ctx, body: fan_out(ctx.stores, ctx.config, body))


@bp.queue_trigger(arg_name="msg", queue_name=DELIVERIES, connection="AzureWebJobsStorage")
def deliver_events(msg: func.QueueMessage) -> None:
    load()
    from ..pipeline.delivery import deliver

    run_stage(
        msg,
        DELIVERIES,
        "deliver",
        lambda ctx, body: deliver(ctx.stores, ctx.config, body, now=now()),
    )
