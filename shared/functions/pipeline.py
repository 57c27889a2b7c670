"""The queue-triggered stages: inbound -> map -> filing -> file. Thin: the work is in pipeline/."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from ..pipeline.context import get_context
from ..pipeline.file_stage import file_plan
from ..pipeline.map_stage import map_inbound
from ..pipeline.poison import max_dequeue_count, run_guarded
from ..store.stores import FILING, INBOUND

bp = func.Blueprint()
log = logging.getLogger(__name__)
_MAX_DEQUEUE = max_dequeue_count()


def _now() -> datetime:
    return datetime.now(UTC)


@bp.queue_trigger(arg_name="msg", queue_name=INBOUND, connection="AzureWebJobsStorage")
def map_stage(msg: func.QueueMessage) -> None:
    ctx = get_context()
    run_guarded(
        ctx.stores,
        queue=INBOUND,
        stage="map",
        body=msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        now=_now,
        max_dequeue=_MAX_DEQUEUE,
        handler=lambda body: map_inbound(ctx.stores, ctx.config, body),
    )


@bp.queue_trigger(arg_name="msg", queue_name=FILING, connection="AzureWebJobsStorage")
def file_stage(msg: func.QueueMessage) -> None:
    ctx = get_context()
    run_guarded(
        ctx.stores,
        queue=FILING,
        stage="file",
        body=msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        now=_now,
        max_dequeue=_MAX_DEQUEUE,
        handler=lambda body: file_plan(
            ctx.stores, ctx.config, body, now=_now(), source_for=ctx.source
        ),
    )
