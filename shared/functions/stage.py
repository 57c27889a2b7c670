"""What every queue-triggered stage does around its work: context, clock, poison handling, and
`stage`, the one way a blueprint declares a queue trigger (`timer`: the same for timers).

A blueprint is a table of triggers:

    @stage(bp, queue=INBOUND, names_mail=True)
    def map_stage() -> Stage:
        from ..stages import map

        return map

The decorated function only names the stage module, imported on the first message (never when
the worker indexes the app, so a cold start stays light); the trigger loads the app's modules,
builds the context and runs the module's `handle` under the poison guard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import azure.functions as func

from .loading import load

if TYPE_CHECKING:
    from ..services.context import AppContext

CONNECTION = "AzureWebJobsStorage"
log = logging.getLogger(__name__)


class Stage(Protocol):
    """A stage module (shared/stages/<queue>.py)."""

    STAGE: str  # its name in logs, metrics and poison messages

    def handle(self, ctx: AppContext, body: bytes, now: datetime) -> object: ...


@runtime_checkable
class PoisonAware(Protocol):
    """A stage module with something to do when one of its messages goes to poison."""

    def on_poison(self, ctx: AppContext, body: bytes, reason: str, now: datetime) -> None: ...


@cache
def _max_dequeue() -> int:
    from ..services.poison import max_dequeue_count

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
    from ..services.context import get_context
    from ..services.failure_folder import move_failed
    from ..services.poison import run_guarded

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


def stage(
    bp: func.Blueprint, *, queue: str, names_mail: bool = False
) -> Callable[[Callable[[], Stage]], Callable[[func.QueueMessage], None]]:
    """Register a queue trigger named after the decorated function that runs the stage module
    it returns. `names_mail`: see `run_stage`."""

    def register(module_of: Callable[[], Stage]) -> Callable[[func.QueueMessage], None]:
        def trigger(msg: func.QueueMessage) -> None:
            load()
            module = module_of()
            hook = module.on_poison if isinstance(module, PoisonAware) else None
            run_stage(
                msg,
                queue,
                module.STAGE,
                lambda ctx, body: module.handle(ctx, body, now()),
                names_mail=names_mail,
                on_poison=hook,
            )

        # The worker names the function after the Python function and reads its bindings
        # from the parameter names, so the trigger takes the decorated function's name.
        trigger.__name__ = trigger.__qualname__ = module_of.__name__
        trigger.__doc__ = module_of.__doc__
        bp.queue_trigger(arg_name="msg", queue_name=queue, connection=CONNECTION)(trigger)
        return trigger

    return register


def timer(
    bp: func.Blueprint, *, schedule: str
) -> Callable[[Callable[[AppContext], None]], Callable[[func.TimerRequest], None]]:
    """Register a timer trigger (NCRONTAB `schedule`) named after the decorated function, which
    gets the context: the trigger loads the app's modules first and notes a late tick."""

    def register(work: Callable[[AppContext], None]) -> Callable[[func.TimerRequest], None]:
        def trigger(timer: func.TimerRequest) -> None:
            load()
            from ..services.context import get_context

            if timer.past_due:
                log.info("%s: timer is past due; running now", work.__name__)
            work(get_context())

        # As in `stage`: the worker names the function and its binding after these.
        trigger.__name__ = trigger.__qualname__ = work.__name__
        trigger.__doc__ = work.__doc__
        bp.timer_trigger(schedule=schedule, arg_name="timer", run_on_startup=False)(trigger)
        return trigger

    return register
