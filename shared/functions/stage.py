"""What every queue-triggered stage does around its work: context, clock, poison handling."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from ..pipeline.context import AppContext


@cache
def _max_dequeue() -> int:
    from ..pipeline.poison import max_dequeue_count

    return max_dequeue_count()


def now() -> datetime:
    return datetime.now(UTC)


def run_stage(
    msg: func.QueueMessage,
    queue: str,
    stage: str,
    work: Callable[[AppContext, bytes], object],
    *,
    names_mail: bool = False,
    on_poison: Callable[[AppContext, bytes, str, datetime], object] | None = None,
) -> None:
    """`names_mail`: the queue's messages name a mail (inbound, filing), which moves to its
    mailbox's failure folder when it ends in the poison queue. `on_poison`: what else to do
    when a message ends there (with its body and the reason)."""
    from ..pipeline.context import get_context
    from ..pipeline.failure_folder import move_failed
    from ..pipeline.poison import run_guarded

    ctx = get_context()
    run_guarded(
        ctx.stores,
        queue=queue,
        stage=stage,
        body=msg.get_body(),
        dequeue_count=msg.dequeue_count or 1,
        now=now,
        max_dequeue=_max_dequeue(),
        handler=lambda body: work(ctx, body),
        on_poison=(
            (lambda body, why: move_failed(ctx, body, why, now()))
            if names_mail
            else (lambda body, why: on_poison(ctx, body, why, now()))
            if on_poison is not None
            else None
        ),
    )
