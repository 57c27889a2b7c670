"""GET /api/health: is storage reachable, how deep are the queues, how is each mailbox."""

from __future__ import annotations

import json
import logging
from itertools import islice
from typing import Any

import azure.functions as func

from ..pipeline.context import get_context
from ..pipeline.poll import mailbox_status
from ..store.stores import HELD, QUEUES, poison

bp = func.Blueprint()
HELD_COUNT_CAP = 1000
log = logging.getLogger(__name__)


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:  # noqa: ARG001
    body: dict[str, Any] = {
        "status": "ok",
        "held": 0,
        "storage": {"reachable": True},
        "queues": {},
        "mailboxes": {},
    }
    try:
        ctx = get_context()
        for name in QUEUES:
            body["queues"][name] = ctx.stores.queues.depth(name)
            body["queues"][poison(name)] = ctx.stores.queues.depth(poison(name))
        body["mailboxes"] = mailbox_status(ctx)
        # Mail the rate limit held back, waiting for an operator (counted up to a cap).
        held = ctx.stores.table(HELD).all(select=["PartitionKey"])
        body["held"] = sum(1 for _ in islice(held, HELD_COUNT_CAP))
    except Exception as exc:
        log.exception("health: check failed")
        body["status"] = "unhealthy"
        body["storage"] = {"reachable": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    else:
        if any(m["status"] == "failing" or m["warnings"] for m in body["mailboxes"].values()):
            body["status"] = "degraded"
        if any(body["queues"][poison(q)] for q in QUEUES):
            body["status"] = "degraded"
    code = 503 if body["status"] == "unhealthy" else 200
    return func.HttpResponse(
        json.dumps(body, indent=2), status_code=code, mimetype="application/json"
    )
