"""Microsoft Graph: the webhook endpoints, the queue stages behind them, and the timer that
keeps subscriptions alive. The validation handshake needs nothing beyond azure.functions, so a
cold worker answers it before the storage SDKs and pydantic are even imported; they load with
the first notification (see function_app.py). httpx and msal load on the queue and timer paths.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import azure.functions as func

from ..store.names import GRAPH_FETCH, GRAPH_NOTIFICATIONS, GRAPH_STATE
from ..telemetry import instruments
from .loading import load, loaded
from .stage import now, run_stage

if TYPE_CHECKING:
    from ..pipeline.context import AppContext
    from ..pipeline.graph_intake import Answer, Checked
    from ..pipeline.group_commit import GroupCommit
    from ..store.queues import Queues

bp = func.Blueprint()
log = logging.getLogger(__name__)
SUBSCRIPTIONS_SCHEDULE = "0 7,37 * * * *"  # twice an hour
MAX_TOKEN = 1024
KNOWN_FOR = 600.0  # seconds a known subscription nonce is trusted without a read
UNKNOWN_FOR = 30.0

_nonces: dict[str, tuple[bool, float]] = {}
_nonces_lock = threading.Lock()
_commits: tuple[Queues, asyncio.AbstractEventLoop, GroupCommit] | None = None


def _validation(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's handshake: 200, text/plain, the decoded token, before anything else."""
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_TOKEN:
        return func.HttpResponse("validation token too long", status_code=400)
    return func.HttpResponse(token, status_code=200, mimetype="text/plain")


class _MustBlock(Exception):
    """Checking this POST needs a table read or a first import: not on the event loop."""


def _known(ctx: AppContext, nonce: str, *, may_block: bool) -> bool:
    """Is this one of our subscriptions? Cached: a warm worker answers without a read."""
    from ..sources.graph.state import NONCES

    clock = time.monotonic()
    with _nonces_lock:
        cached = _nonces.get(nonce)
    if cached is not None and cached[1] > clock:
        return cached[0]
    if not may_block:
        raise _MustBlock
    found = ctx.stores.table(GRAPH_STATE).get(NONCES, nonce) is not None
    with _nonces_lock:
        _nonces[nonce] = (found, clock + (KNOWN_FOR if found else UNKNOWN_FOR))
    return found


def _committer(queues: Queues) -> GroupCommit:
    """The worker's group commit onto the notification queue (one per event loop): POSTs that
    arrive while one is being persisted share the next storage call."""
    from ..pipeline.graph_intake import group_commit

    global _commits
    loop = asyncio.get_running_loop()
    if _commits is None or _commits[0] is not queues or _commits[1] is not loop:
        commit = group_commit(lambda message: queues.send_bytes(GRAPH_NOTIFICATIONS, message))
        _commits = (queues, loop, commit)
    return _commits[2]


def _check(body: bytes, *, may_block: bool) -> tuple[Answer | Checked, Queues]:
    """Parse and verify a POST. Without `may_block` (on the event loop) it raises _MustBlock
    where it would wait: on the first call (imports, the context) and for a nonce not seen
    lately (a table read). A forged clientState fails its MAC before any read."""
    if not may_block and not loaded():
        raise _MustBlock
    load()
    from ..pipeline.context import built_context, get_context
    from ..pipeline.graph_intake import check
    from ..sources.graph.state import secret

    ctx = get_context(ensure=False) if may_block else built_context()
    if ctx is None:
        raise _MustBlock
    checked = check(
        body,
        secret=secret(ctx.config),
        known=lambda nonce: _known(ctx, nonce, may_block=may_block),
    )
    return checked, ctx.stores.queues


async def _intake(req: func.HttpRequest) -> func.HttpResponse:
    early = _validation(req)
    if early is not None:
        return early
    started = time.perf_counter()
    body = req.get_body()
    try:
        # On the loop: a thread hop per POST costs more than the check, and the group's
        # write, on its own thread, would queue behind them. Where it would block it starts
        # over on a thread: the first POST, and once per subscription every 10 minutes.
        checked, queues = _check(body, may_block=False)
    except _MustBlock:
        loop = asyncio.get_running_loop()
        checked, queues = await loop.run_in_executor(None, partial(_check, body, may_block=True))
    from ..pipeline.graph_intake import Answer, persist

    if not isinstance(checked, Answer):
        checked = await persist(checked, _committer(queues).submit)
    metrics = instruments()
    if metrics is not None:
        elapsed = (time.perf_counter() - started) * 1000
        metrics.webhook_ms.record(elapsed, {"status": checked.status})
    return func.HttpResponse(checked.text, status_code=checked.status)


# Async, as the worker runs them on its event loop: a POST waiting for its group's write holds
# no thread, so all POSTs in flight can share one (see pipeline/group_commit.py).
@bp.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    return await _intake(req)


@bp.route(route="graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await _intake(req)


@bp.queue_trigger(arg_name="msg", queue_name=GRAPH_NOTIFICATIONS, connection="AzureWebJobsStorage")
def graph_process_notifications(msg: func.QueueMessage) -> None:
    load()
    from ..pipeline.graph_fetch import process_notifications

    run_stage(
        msg,
        GRAPH_NOTIFICATIONS,
        "graph-notifications",
        lambda ctx, body: process_notifications(ctx, body, now()),
    )


@bp.queue_trigger(arg_name="msg", queue_name=GRAPH_FETCH, connection="AzureWebJobsStorage")
def graph_fetch(msg: func.QueueMessage) -> None:
    load()
    from ..pipeline.graph_fetch import fetch

    run_stage(msg, GRAPH_FETCH, "graph-fetch", lambda ctx, body: fetch(ctx, body, now()))


@bp.timer_trigger(schedule=SUBSCRIPTIONS_SCHEDULE, arg_name="timer", run_on_startup=False)
def graph_subscriptions(timer: func.TimerRequest) -> None:
    """Create missing subscriptions, renew those near expiry, recreate vanished ones."""
    load()
    from ..pipeline.context import get_context
    from ..pipeline.graph_fetch import request_resync
    from ..sources.graph.subscriptions import maintain

    if timer.past_due:
        log.info("graph subscriptions: timer is past due; running now")
    ctx = get_context()
    at = datetime.now(UTC)
    summary = maintain(ctx.config, ctx.stores, at)
    for mailbox in summary.resync:
        request_resync(ctx, mailbox, at, reason="subscribed")
