"""The HTTP API: records, their timelines, manual filing, message status, and its OpenAPI.

Thin: parsing, status codes and JSON here; the work is in `pipeline/records.py`, imported on
the first call (see function_app.py). Every route uses function keys in Azure (`?code=` or
`x-functions-key`); the local host does not check them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.functions as func

from .loading import load

if TYPE_CHECKING:
    from ..pipeline.audit import Actor
    from ..pipeline.context import AppContext

bp = func.Blueprint()
log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, mimetype="application/json"
    )


def _error(status: int, code: str, message: str) -> func.HttpResponse:
    return _json({"error": {"code": code, "message": message}}, status)


def _actor(req: func.HttpRequest) -> Actor:
    from ..pipeline.audit import Actor

    # Set by App Service authentication when it is in front; otherwise the caller holds a key.
    name = req.headers.get("x-ms-client-principal-name") or "function-key"
    return Actor(name=name, source="api")


def _body(req: func.HttpRequest) -> Any:
    from ..pipeline.records import RecordError

    raw = req.get_body()
    if len(raw) > MAX_BODY:
        raise RecordError(413, "too_large", f"request body over {MAX_BODY} bytes")
    if not raw:
        raise RecordError(400, "bad_body", "the request needs a JSON body")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RecordError(400, "bad_json", f"body is not JSON: {exc}") from exc


def _handle(
    req: func.HttpRequest, work: Callable[[AppContext, func.HttpRequest], func.HttpResponse]
) -> func.HttpResponse:
    from ..pipeline.context import get_context
    from ..pipeline.records import RecordError

    try:
        return work(get_context(), req)
    except RecordError as exc:
        return _error(exc.status, exc.code, exc.message)
    except Exception:
        log.exception("api: %s %s failed", req.method, req.url.split("?")[0])
        return _error(500, "internal", "internal error; see the logs")


def _now() -> datetime:
    return datetime.now(UTC)


@bp.route(route="records", methods=["GET"])
def records_list(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..pipeline.records import RecordError, list_records

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        try:
            limit = int(req.params.get("limit", "50"))
        except ValueError:
            raise RecordError(400, "bad_limit", "limit must be a whole number") from None
        rows, token = list_records(
            ctx.stores,
            ctx.config,
            type_name=req.params.get("type"),
            status=req.params.get("status"),
            contact=req.params.get("contact"),
            text=req.params.get("q"),
            limit=limit,
            continuation=req.params.get("continuation"),
        )
        return _json({"records": rows, "continuation": token})

    return _handle(req, work)


@bp.route(route="records/{type}/{id}", methods=["GET"])
def records_get(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..core.contracts import RecordRef
    from ..pipeline.audit import audit
    from ..pipeline.records import resolve, timeline, view

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        record = resolve(ctx.stores, ctx.config, req.route_params["type"], req.route_params["id"])
        body = {**view(record), "timeline": timeline(ctx.stores, record)}
        ref = RecordRef(type=record["PartitionKey"], key=record["RowKey"])
        audit(ctx.stores, _actor(req), "read", ref, "GET record", _now())
        return _json(body)

    return _handle(req, work)


@bp.route(route="records/{type}/{id}", methods=["PATCH"])
def records_update(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..pipeline.records import resolve, update_record

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        body = _body(req)
        record = resolve(ctx.stores, ctx.config, req.route_params["type"], req.route_params["id"])
        return _json(update_record(ctx.stores, ctx.config, record, body, _actor(req), _now()))

    return _handle(req, work)


@bp.route(route="records/{type}/{id}/messages", methods=["POST"])
def records_file_message(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..pipeline.records import file_manually, resolve, view

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        body = _body(req)
        record = resolve(ctx.stores, ctx.config, req.route_params["type"], req.route_params["id"])
        plan = file_manually(ctx.stores, ctx.config, record, body, _actor(req), _now())
        return _json(
            {"message_key": plan.message_key, "record": view(record)["id"], "status": "queued"}, 202
        )

    return _handle(req, work)


@bp.route(route="records/{type}/{id}/reply", methods=["POST"])
def records_reply(req: func.HttpRequest) -> func.HttpResponse:
    """Answer from a record: queued, then sent through the record's mailbox."""
    load()
    from ..pipeline.audit import audit
    from ..pipeline.outbound import reply_from_record
    from ..pipeline.records import resolve, view

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:

        body = _body(req)
        record = resolve(ctx.stores, ctx.config, req.route_params["type"], req.route_params["id"])
        actor = _actor(req)
        mail = reply_from_record(ctx.stores, ctx.config, record, body, actor.name)
        audit(ctx.stores, actor, "reply", mail.record, f"reply {mail.id} queued", _now())
        return _json(
            {"id": mail.id, "record": view(record)["id"], "to": list(mail.to), "status": "queued"},
            202,
        )

    return _handle(req, work)


@bp.route(route="messages/{key}", methods=["GET"])
def messages_get(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..pipeline.messages import message_status
    from ..pipeline.records import RecordError

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        found = message_status(ctx.stores, req.route_params["key"])
        if found is None:
            raise RecordError(404, "unknown_message", "Mailfiler has no such message")
        return _json(found)

    return _handle(req, work)


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:  # noqa: ARG001
    load()
    from .openapi import document

    return _json(document())
