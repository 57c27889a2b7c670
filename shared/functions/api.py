"""The HTTP API: records, their timelines, manual filing, message status, and its OpenAPI.

Thin: parsing, status codes and JSON here; the work is in `services/records.py`, imported on
the first call (see function_app.py). Every route uses function keys in Azure (`?code=` or
`x-functions-key`); the local host does not check them.

Every answer to bad input is a 4xx with the error body `{"error": {"code", "message"}}`; a 500
means a bug or a storage outage, never the caller's input.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import azure.functions as func

from .loading import load

if TYPE_CHECKING:
    from ..services.audit import Actor
    from ..services.context import AppContext
    from ..services.downloads import Download

bp = func.Blueprint()
log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
MAX_SOURCE_ID = 4096  # ids are short (a file name, a UID, a Graph id): longer is not one


def _json(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, default=str), status_code=status, mimetype="application/json"
    )


def _error(status: int, code: str, message: str) -> func.HttpResponse:
    return _json({"error": {"code": code, "message": message}}, status)


def easy_auth_enabled() -> bool:
    """App Service Authentication ("Easy Auth") is on. App Service sets WEBSITE_AUTH_ENABLED=True
    in the app's environment when it is (Microsoft.Identity.Web reads the same variable); with it
    on, App Service strips X-MS-CLIENT-PRINCIPAL-* headers a caller sends and sets its own."""
    return os.environ.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true"


def _in_azure() -> bool:
    # Set by App Service on every instance, never by Core Tools or our local host.
    return bool(os.environ.get("WEBSITE_INSTANCE_ID"))


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _actor(req: func.HttpRequest) -> Actor:
    """Who is calling, for the audit trail. The principal header is anyone's to write unless
    App Service Authentication is in front, so it counts only then. Otherwise the Functions host
    has checked a function key in Azure (it does not tell a Python function which key), and
    nothing has been checked on the local host."""
    from ..services.audit import Actor

    principal = req.headers.get("x-ms-client-principal-name")
    if principal and easy_auth_enabled():
        return Actor(name=_UNPRINTABLE.sub("?", principal)[:200], source="api")
    if principal:
        log.warning("api: x-ms-client-principal-name ignored: App Service Authentication is off")
    keyed = req.headers.get("x-functions-key") or req.params.get("code")
    return Actor(name="function-key" if keyed and _in_azure() else "anonymous", source="api")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body(req: func.HttpRequest) -> Any:
    from ..services.records import RecordError

    raw = req.get_body()
    if len(raw) > MAX_BODY:
        raise RecordError(413, "too_large", f"request body over {MAX_BODY} bytes")
    # Only JSON that says so: a browser sends text/plain or a form cross-site without asking
    # first (no CORS preflight); application/json it may not.
    media = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise RecordError(
            415, "unsupported_media_type", "send the body as Content-Type: application/json"
        )
    if not raw:
        raise RecordError(400, "bad_body", "the request needs a JSON body")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:  # e.g. 30,000 `[`: json recurses once per level
        raise RecordError(400, "bad_json", "body is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise RecordError(400, "bad_json", f"body is not JSON: {str(exc)[:200]}") from exc


def _handle(
    req: func.HttpRequest, work: Callable[[AppContext, func.HttpRequest], func.HttpResponse]
) -> func.HttpResponse:
    from ..services.context import get_context
    from ..services.records import RecordError, StorageLimitError

    try:
        return work(get_context(), req)
    except RecordError as exc:
        return _error(exc.status, exc.code, exc.message)
    except StorageLimitError as exc:
        # Checked before anything leaves the process: input that Table Storage cannot hold.
        log.warning("api: %s %s: %s", req.method, req.url.split("?")[0][:200], exc)
        return _error(422, "too_large", f"Table Storage cannot hold this: {str(exc)[:300]}")
    except Exception:
        log.exception("api: %s %s failed", req.method, req.url.split("?")[0])
        return _error(500, "internal", "internal error; see the logs")


def _now() -> datetime:
    return datetime.now(UTC)


@bp.route(route="records", methods=["GET"])
def records_list(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..services.records import RecordError, list_records

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
            mailbox=req.params.get("mailbox"),
        )
        return _json({"records": rows, "continuation": token})

    return _handle(req, work)


@bp.route(route="records/{type}/{id}", methods=["GET"])
def records_get(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..core.contracts import RecordRef
    from ..services.audit import audit
    from ..services.records import etag, representation, resolve

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        record = resolve(ctx.stores, ctx.config, req.route_params["type"], req.route_params["id"])
        body = representation(ctx.stores, record)
        ref = RecordRef(type=record["PartitionKey"], key=record["RowKey"])
        audit(ctx.stores, _actor(req), "read", ref, "GET record", _now())
        response = _json(body)
        response.headers["ETag"] = etag(body)
        return response

    return _handle(req, work)


@bp.route(route="records/{type}/{id}", methods=["PATCH"])
def records_update(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..services.records import etag, resolve, update_record

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        body = _body(req)
        record = resolve(ctx.stores, ctx.config, req.route_params["type"], req.route_params["id"])
        # If-Match is optional: without it the write is still guarded by the entity's own ETag
        # (409 if the record changed between our read and our write).
        full = update_record(
            ctx.stores,
            ctx.config,
            record,
            body,
            _actor(req),
            _now(),
            if_match=req.headers.get("if-match"),
        )
        response = _json({k: v for k, v in full.items() if k != "timeline"})
        response.headers["ETag"] = etag(full)  # the ETag a GET would now answer with
        return response

    return _handle(req, work)


@bp.route(route="records/{type}/{id}/messages", methods=["POST"])
def records_file_message(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..services.records import file_manually, resolve, view

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
    from ..services.audit import audit
    from ..services.records import resolve, view
    from ..services.replies import reply_from_record

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        body = _body(req)
        if isinstance(body, dict):  # null stands for "the default", as if left out (OpenAPI)
            body = {k: v for k, v in body.items() if v is not None or k == "body"}
        record = resolve(ctx.stores, ctx.config, req.route_params["type"], req.route_params["id"])
        actor = _actor(req)
        mail = reply_from_record(ctx.stores, ctx.config, record, body, actor.name)
        audit(ctx.stores, actor, "reply", mail.record, f"reply {mail.id} queued", _now())
        return _json(
            {"id": mail.id, "record": view(record)["id"], "to": list(mail.to), "status": "queued"},
            202,
        )

    return _handle(req, work)


def _download(found: Download) -> func.HttpResponse:
    return func.HttpResponse(found.data, status_code=200, headers=found.headers())


@bp.route(route="records/{type}/{id}/messages/{key}/attachments/{index}", methods=["GET"])
def records_attachment(req: func.HttpRequest) -> func.HttpResponse:
    """An attachment of a mail on a record, as a download (services/downloads.py)."""
    load()
    from ..services.downloads import attachment

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        p = req.route_params
        return _download(
            attachment(ctx.stores, ctx.config, p["type"], p["id"], p["key"], p["index"])
        )

    return _handle(req, work)


@bp.route(route="messages/{key}/raw", methods=["GET"])
def messages_raw(req: func.HttpRequest) -> func.HttpResponse:
    """A message's raw mail (.eml) as a download."""
    load()
    from ..services.downloads import message_raw

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        return _download(message_raw(ctx.stores, req.route_params["key"]))

    return _handle(req, work)


@bp.route(route="messages/{key}", methods=["GET"])
def messages_get(req: func.HttpRequest) -> func.HttpResponse:
    load()
    from ..services.messages import message_status
    from ..services.records import RecordError

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        found = message_status(ctx.stores, req.route_params["key"])
        if found is None:
            raise RecordError(404, "unknown_message", "Mailfiler has no such message")
        return _json(found)

    return _handle(req, work)


@bp.route(route="messages", methods=["GET"])
def messages_by_source(req: func.HttpRequest) -> func.HttpResponse:
    """Mail named by its source id (mail without a Message-ID has no other name)."""
    load()
    from ..services.messages import messages_by_source as by_source
    from ..services.records import RecordError

    def work(ctx: AppContext, req: func.HttpRequest) -> func.HttpResponse:
        source_id = req.params.get("source_id") or ""
        mailbox = req.params.get("mailbox")
        if not source_id:
            raise RecordError(400, "bad_query", "give ?source_id= (the mail's id in its mailbox)")
        if len(source_id) > MAX_SOURCE_ID:
            raise RecordError(400, "bad_query", f"source_id is over {MAX_SOURCE_ID} characters")
        if mailbox is not None and ctx.config.mailbox(mailbox) is None:
            raise RecordError(404, "unknown_mailbox", f"no mailbox {mailbox[:100]!r}")
        names = [mailbox] if mailbox is not None else [m.name for m in ctx.config.mailboxes]
        found = by_source(ctx.stores, names, source_id)
        if not found:
            raise RecordError(404, "unknown_message", "no mailbox ingested a mail with this id")
        return _json({"messages": found})

    return _handle(req, work)


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:  # noqa: ARG001
    load()
    from .openapi import document

    return _json(document())


_TEMPLATE_PART = re.compile(r"\{[^}]+\}")


def allowed_methods(path: str) -> list[str]:
    """The methods the API's documented routes take at `path` (under /api); [] if none has it."""
    from .openapi import document

    allowed: set[str] = set()
    for template, operations in document()["paths"].items():
        pattern = "".join(
            "[^/]+" if _TEMPLATE_PART.fullmatch(part) else re.escape(part)
            for part in re.split(r"(\{[^}]+\})", template)
        )
        if re.fullmatch(pattern, path):
            allowed.update(m.upper() for m in operations if m != "parameters")
    return sorted(allowed)


# Last in route precedence (a catch-all): a JSON error for a path no function has (404) or a
# method its route does not take (405 with Allow), not the host's empty answer.
@bp.route(route="{*path}", auth_level=func.AuthLevel.ANONYMOUS)
def not_found(req: func.HttpRequest) -> func.HttpResponse:
    path = "/" + (req.route_params.get("path") or "")
    allowed = allowed_methods(path)
    if allowed:
        response = _error(
            405, "method_not_allowed", f"{req.method} is not allowed here: {', '.join(allowed)}"
        )
        response.headers["Allow"] = ", ".join(allowed)
        return response
    return _error(404, "not_found", f"no route {('/api' + path)[:200]!r}")
