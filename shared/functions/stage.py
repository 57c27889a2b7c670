"""What every queue-triggered stage does around its work: context, clock, poison handling."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import azure.functions as func

from ..pipeline.context import AppContext, get_context
from ..pipeline.poison import max_dequeue_count, run_guarded

_MAX_DEQUEUE = max_dequeue_count()


def now() -> datetime:
    return datetime.now(UTC)


def run_stage(
    msg: func.QueueMessage, queue: str, stage: str, work: Callable[[AppContext, bytes], object]
) -> None:
    ctx = get_context()
    run_guarded(
        ctx.stores,
        queue=queue,
        stage=stage,
        body=msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        now=now,
        max_dequeue=_MAX_DEQUEUE,
        handler=lambda body: work(ctx, body),
    )
