"""Microsoft Graph: the webhook endpoints, the queue stages behind them, and the timer that
keeps subscriptions alive. The validation handshake needs nothing beyond azure.functions, so a
cold worker answers it before the storage SDKs and pydantic are even imported; they load with
the first notification (see function_app.py). httpx and msal load on the queue and timer paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

from ..store.names import GRAPH_FETCH, GRAPH_NOTIFICATIONS
from .loading import load, loaded
from .stage import Stage, stage, timer

if TYPE_CHECKING:
    from ..services.context import AppContext

bp = func.Blueprint()
log = logging.getLogger(__name__)
SUBSCRIPTIONS_SCHEDULE = "0 7,37 * * * *"  # twice an hour
MAX_TOKEN = 1024
# The stage's answer to a POST, as Graph must see it: 202 once persisted; 413 and 400 for what
# Graph never sends; 503 when we cannot check or keep it, so that Graph delivers again.
HTTP_STATUS = {"accepted": 202, "too_large": 413, "malformed": 400, "unavailable": 503}


def _validation(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's handshake: 200, text/plain, the decoded token, before anything else."""
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_TOKEN:
        return func.HttpResponse("validation token too long", status_code=400)
    return func.HttpResponse(token, status_code=200, mimetype="text/plain")


async def _intake(req: func.HttpRequest) -> func.HttpResponse:
    early = _validation(req)
    if early is not None:
        return early
    started = time.perf_counter()
    if not loaded():
        # The first POST imports the app on a thread, under loading's lock, never on the loop.
        await asyncio.get_running_loop().run_in_executor(None, load)
    from ..stages.graph_notifications import receive
    from ..telemetry import instruments

    answer = await receive(req.get_body())
    status = HTTP_STATUS[answer.outcome]
    metrics = instruments()
    if metrics is not None:
        elapsed = (time.perf_counter() - started) * 1000
        metrics.webhook_ms.record(elapsed, {"status": status})
    return func.HttpResponse(answer.text, status_code=status)


# Async, as the worker runs them on its event loop: a POST waiting for its group's write holds
# no thread, so all POSTs in flight can share one (see services/group_commit.py).
@bp.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    return await _intake(req)


@bp.route(route="graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await _intake(req)


@stage(bp, queue=GRAPH_NOTIFICATIONS)
def graph_process_notifications() -> Stage:
    """What a webhook POST kept: lifecycle events handled, each change one `graph-fetch` job."""
    from ..stages import graph_notifications

    return graph_notifications


@stage(bp, queue=GRAPH_FETCH)
def graph_fetch() -> Stage:
    """Read one message or event from Graph and ingest it, or note where it moved."""
    from ..stages import graph_fetch

    return graph_fetch


@timer(bp, schedule=SUBSCRIPTIONS_SCHEDULE)
def graph_subscriptions(ctx: AppContext) -> None:
    """Create missing subscriptions, renew those near expiry, recreate vanished ones."""
    from ..services.mailboxes import request_resync
    from ..sources.graph.subscriptions import maintain

    at = datetime.now(UTC)
    summary = maintain(ctx.config, ctx.stores, at)
    for mailbox in summary.resync:
        request_resync(ctx, mailbox, at, reason="subscribed")
