"""The queue-triggered stages: inbound -> map -> filing -> file -> mailbox-actions. Thin: the
work is in pipeline/, imported when a message comes (see function_app.py)."""

from __future__ import annotations

import azure.functions as func

from ..store.names import FILING, INBOUND, MAILBOX_ACTIONS, OUTBOUND, TASK_CHANGES
from .loading import load
from .stage import now, run_stage

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=INBOUND, connection="AzureWebJobsStorage")
def map_stage(msg: func.QueueMessage) -> None:
    load()
    from ..pipeline.map_stage import map_inbound

    run_stage(
        msg,
        INBOUND,
        "map",
        lambda ctx, body: map_inbound(
            ctx.stores, ctx.config, body, now=now(), signing_keys=ctx.signing_keys
        ),
        names_mail=True,
    )


@bp.queue_trigger(arg_name="msg", queue_name=FILING, connection="AzureWebJobsStorage")
def file_stage(msg: func.QueueMessage) -> None:
    load()
    from ..pipeline.file_stage import file_plan

    run_stage(
        msg,
        FILING,
        "file",
        lambda ctx, body: file_plan(ctx.stores, ctx.config, body, now=now()),
        names_mail=True,
    )


@bp.queue_trigger(arg_name="msg", queue_name=TASK_CHANGES, connection="AzureWebJobsStorage")
def task_change(msg: func.QueueMessage) -> None:
    """A polled flag or calendar item changed: its task follows (after the mail is filed)."""
    load()
    from ..pipeline.task_changes import handle_task_change

    run_stage(msg, TASK_CHANGES, "tasks", lambda ctx, body: handle_task_change(ctx, body, now()))


@bp.queue_trigger(arg_name="msg", queue_name=OUTBOUND, connection="AzureWebJobsStorage")
def outbound(msg: func.QueueMessage) -> None:
    """Send a notice or a reply through its mailbox, once; failures retry, then poison."""
    load()
    from ..pipeline.outbound import handle_outbound

    run_stage(msg, OUTBOUND, "outbound", lambda ctx, body: handle_outbound(ctx, body, now()))


@bp.queue_trigger(arg_name="msg", queue_name=MAILBOX_ACTIONS, connection="AzureWebJobsStorage")
def mailbox_actions(msg: func.QueueMessage) -> None:
    """A filed mail's after-filing actions (mark read, categorise, move), once; retried after a
    busy or failing server, then poison (its pending row says failed)."""
    load()
    from ..pipeline.actions_stage import STAGE, actions_poisoned, handle_actions

    run_stage(
        msg,
        MAILBOX_ACTIONS,
        STAGE,
        lambda ctx, body: handle_actions(ctx, body, now()),
        on_poison=actions_poisoned,
    )
