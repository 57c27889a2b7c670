"""GET /api/health: is storage reachable, how deep are the queues, how is each mailbox."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func

from .loading import load

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:  # noqa: ARG001
    load()
    from ..services.context import get_context
    from ..services.health import health_report

    try:
        ctx = get_context()
    except Exception as exc:
        log.exception("health: no context")
        body: dict[str, Any] = {"status": "unhealthy", "storage": {"reachable": False}}
        body["error"] = f"{type(exc).__name__}: {exc}"[:500]
    else:
        body = health_report(ctx)
    code = 503 if body["status"] == "unhealthy" else 200
    return func.HttpResponse(
        json.dumps(body, indent=2), status_code=code, mimetype="application/json"
    )
