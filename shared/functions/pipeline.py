"""The queue-triggered stages: inbound -> map -> filing -> file. Thin: the work is in pipeline/."""

from __future__ import annotations

import azure.functions as func

from ..pipeline.file_stage import file_plan
from ..pipeline.flag_changes import handle_flag_change
from ..pipeline.map_stage import map_inbound
from ..store.stores import FILING, FLAG_CHANGES, INBOUND
from .stage import now, run_stage

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=INBOUND, connection="AzureWebJobsStorage")
def map_stage(msg: func.QueueMessage) -> None:
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
    run_stage(
        msg,
        FILING,
        "file",
        lambda ctx, body: file_plan(ctx.stores, ctx.config, body, now=now(), source_for=ctx.source),
        names_mail=True,
    )


@bp.queue_trigger(arg_name="msg", queue_name=FLAG_CHANGES, connection="AzureWebJobsStorage")
def flag_change(msg: func.QueueMessage) -> None:
    """A polled message's \\Flagged changed: its task follows (after the mail is filed)."""
    run_stage(msg, FLAG_CHANGES, "tasks", lambda ctx, body: handle_flag_change(ctx, body, now()))
