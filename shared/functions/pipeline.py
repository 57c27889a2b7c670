"""The queue-triggered stages of the mail itself: inbound -> map (which files its plans at
once; `filing` -> file carries those whose filing failed there) -> mailbox-actions, and the
task changes and outbound mail beside them. Thin: each trigger names
its stage module (shared/stages/), imported when a message comes (see functions/stage.py)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import azure.functions as func

from ..store.names import FILING, INBOUND, MAILBOX_ACTIONS, OUTBOUND, TASK_CHANGES
from .stage import Stage, stage

if TYPE_CHECKING:
    from ..services.context import AppContext

bp = func.Blueprint()


class _MapThenFile:
    """The `inbound` stage: map, then file each plan in the same invocation (the `filing`
    queue carries only plans whose filing failed there, for its retries). The two stages do
    not import each other, so they are joined here."""

    STAGE = "map"

    @staticmethod
    def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
        from ..stages import file, map

        def file_now(plan: bytes, at: datetime) -> object:
            return file.handle(ctx, plan, at)

        return map.map_queued(
            ctx.stores, ctx.config, body, now=now, signing_keys=ctx.signing_keys, file=file_now
        )


@stage(bp, queue=INBOUND, names_mail=True)
def map_stage() -> Stage:
    """Parse, gather, decide, and file the mail's plans (a failed one goes to `filing`)."""
    return _MapThenFile()


@stage(bp, queue=FILING, names_mail=True)
def file_stage() -> Stage:
    """Carry a filing plan out in storage, then hand the mailbox actions on."""
    from ..stages import file

    return file


@stage(bp, queue=TASK_CHANGES)
def task_change() -> Stage:
    """A polled flag or calendar item changed: its task follows (after the mail is filed)."""
    from ..stages import task_changes

    return task_changes


@stage(bp, queue=OUTBOUND)
def outbound() -> Stage:
    """Send a notice or a reply through its mailbox, once; failures retry, then poison."""
    from ..stages import outbound

    return outbound


@stage(bp, queue=MAILBOX_ACTIONS)
def mailbox_actions() -> Stage:
    """A filed mail's after-filing actions (mark read, categorise, move), once; retried after a
    busy or failing server, then poison (its pending row says failed)."""
    from ..stages import mailbox_actions

    return mailbox_actions
