"""The queue-triggered stages: inbound -> map -> filing -> file. Thin: the work is in pipeline/."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import azure.functions as func

from ..pipeline.context import AppContext, get_context
from ..pipeline.file_stage import file_plan
from ..pipeline.map_stage import map_inbound
from ..pipeline.poison import max_dequeue_count, run_guarded
from ..store.stores import FILING, INBOUND

bp = func.Blueprint()
_MAX_DEQUEUE = max_dequeue_count()


def _now() -> datetime:
    return datetime.now(UTC)


def _run(
    msg: func.QueueMessage, queue: str, stage: str, work: Callable[[AppContext, bytes], object]
) -> None:
    ctx = get_context()
    run_guarded(
        ctx.stores,
        queue=queue,
        stage=stage,
        body=msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        now=_now,
        max_dequeue=_MAX_DEQUEUE,
        handler=lambda body: work(ctx, body),
    )


@bp.queue_trigger(arg_name="msg", queue_name=INBOUND, connection="AzureWebJobsStorage")
def map_stage(msg: func.QueueMessage) -> None:
    _run(
        msg,
        INBOUND,
        "map",
        lambda ctx, body: map_inbound(
            ctx.stores, ctx.config, body, now=_now(), signing_keys=ctx.signing_keys
        ),
    )


@bp.queue_trigger(arg_name="msg", queue_name=FILING, connection="AzureWebJobsStorage")
def file_stage(msg: func.QueueMessage) -> None:
    _run(
        msg,
        FILING,
        "file",
        lambda ctx, body: file_plan(
            ctx.stores, ctx.config, body, now=_now(), source_for=ctx.source
        ),
    )
