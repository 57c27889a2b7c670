"""The console's routes: server-rendered pages under /api/console/ (shared/console/).

Anonymous at the Functions level (a browser sends no function key): shared/console/access.py
decides who may look, on every request (only this machine locally; App Service Authentication
in Azure). Thin, like the API: the pages are in shared/console/pages.py, imported on the first
call, and Jinja2 and nh3 on the first page, so indexing the app loads none of it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import azure.functions as func

from .loading import load

if TYPE_CHECKING:
    from ..console.access import Principal
    from ..console.pages import Page
    from ..services.context import AppContext

bp = func.Blueprint()
log = logging.getLogger(__name__)
ANON = func.AuthLevel.ANONYMOUS
RECORD = "console/records/{type}/{id}"
MAIL = RECORD + "/mail/{key}"
MAX_FORM = 16 * 1024
# A reply's text may be 1,000,000 characters (the reply API's limit), each up to 9 bytes encoded.
MAX_REPLY_FORM = 10 * 1024 * 1024
_STATIC = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8"}

Work = Callable[["AppContext", func.HttpRequest, dict[str, str], "Principal"], "Page"]


def _answer(page: Page) -> func.HttpResponse:
    return func.HttpResponse(page.body, status_code=page.status, headers=page.headers)


def _serve(req: func.HttpRequest, work: Work) -> func.HttpResponse:
    load()
    from ..console.access import Refused, principal
    from ..console.pages import error_page
    from ..services.context import get_context
    from ..services.records import RecordError

    headers = {k.lower(): v for k, v in req.headers.items()}
    try:
        who = principal(headers)
        return _answer(work(get_context(), req, headers, who))
    except Refused as exc:
        log.warning("console: %s %s refused: %s", req.method, req.url.split("?")[0][:200], exc)
        return _answer(error_page(exc.status, exc.message))
    except RecordError as exc:
        return _answer(error_page(exc.status, exc.message))
    except Exception:
        log.exception("console: %s %s failed", req.method, req.url.split("?")[0][:200])
        return _answer(error_page(500, "internal error; see the logs"))


def _form(req: func.HttpRequest, headers: dict[str, str], limit: int = MAX_FORM) -> dict[str, str]:
    """A console form's fields (urlencoded, bounded), or Refused."""
    from ..console.access import Refused

    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = req.get_body()
    if media != "application/x-www-form-urlencoded" or len(raw) > limit:
        raise Refused(400, "send the console's form")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form is not valid") from None
    return dict(pairs)


def _images(req: func.HttpRequest) -> bool:
    return bool(req.params.get("images") == "1")


@bp.route(route="console", methods=["GET"], auth_level=ANON)
def console_home(req: func.HttpRequest) -> func.HttpResponse:  # noqa: ARG001
    return func.HttpResponse(
        b"",
        status_code=303,
        headers={"Location": "/api/console/records", "Cache-Control": "no-store"},
    )


@bp.route(route="console/records", methods=["GET"], auth_level=ANON)
def console_records(req: func.HttpRequest) -> func.HttpResponse:
    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:
        from ..console.pages import list_page

        return list_page(ctx, dict(req.params), who)

    return _serve(req, work)


@bp.route(route=RECORD, methods=["GET"], auth_level=ANON)
def console_record(req: func.HttpRequest) -> func.HttpResponse:
    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:
        from ..console.pages import done_notice, record_page

        p = req.route_params
        return record_page(ctx, p["type"], p["id"], who, notice=done_notice(dict(req.params)))

    return _serve(req, work)


@bp.route(route=RECORD + "/status", methods=["POST"], auth_level=ANON)
def console_record_status(req: func.HttpRequest) -> func.HttpResponse:
    def work(
        ctx: AppContext, req: func.HttpRequest, headers: dict[str, str], who: Principal
    ) -> Page:
        from ..console.pages import change_status

        form = _form(req, headers)
        return change_status(
            ctx, req.route_params["type"], req.route_params["id"], form, headers, who
        )

    return _serve(req, work)


@bp.route(route=RECORD + "/reply", methods=["POST"], auth_level=ANON)
def console_record_reply(req: func.HttpRequest) -> func.HttpResponse:
    def work(
        ctx: AppContext, req: func.HttpRequest, headers: dict[str, str], who: Principal
    ) -> Page:
        from ..console.pages import reply

        form = _form(req, headers, MAX_REPLY_FORM)
        return reply(ctx, req.route_params["type"], req.route_params["id"], form, headers, who)

    return _serve(req, work)


@bp.route(route=MAIL, methods=["GET"], auth_level=ANON)
def console_mail(req: func.HttpRequest) -> func.HttpResponse:
    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:
        from ..console.pages import mail_page

        p = req.route_params
        return mail_page(ctx, p["type"], p["id"], p["key"], _images(req), who)

    return _serve(req, work)


@bp.route(route=MAIL + "/file", methods=["POST"], auth_level=ANON)
def console_mail_file(req: func.HttpRequest) -> func.HttpResponse:
    """File this mail on another record, from the mail's page."""

    def work(
        ctx: AppContext, req: func.HttpRequest, headers: dict[str, str], who: Principal
    ) -> Page:
        from ..console.pages import file_elsewhere

        p = req.route_params
        form = _form(req, headers)
        return file_elsewhere(ctx, p["type"], p["id"], p["key"], form, headers, who)

    return _serve(req, work)


@bp.route(route=MAIL + "/body", methods=["GET"], auth_level=ANON)
def console_mail_body(req: func.HttpRequest) -> func.HttpResponse:
    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:  # noqa: ARG001
        from ..console.pages import mail_body

        p = req.route_params
        return mail_body(ctx, p["type"], p["id"], p["key"], _images(req))

    return _serve(req, work)


@bp.route(route=MAIL + "/raw", methods=["GET"], auth_level=ANON)
def console_mail_raw(req: func.HttpRequest) -> func.HttpResponse:
    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:  # noqa: ARG001
        from ..console.pages import download_page
        from ..services.downloads import record_raw

        p = req.route_params
        return download_page(record_raw(ctx.stores, ctx.config, p["type"], p["id"], p["key"]))

    return _serve(req, work)


@bp.route(route=MAIL + "/attachments/{index}", methods=["GET"], auth_level=ANON)
def console_mail_attachment(req: func.HttpRequest) -> func.HttpResponse:
    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:  # noqa: ARG001
        from ..console.pages import download_page
        from ..services.downloads import attachment

        p = req.route_params
        found = attachment(ctx.stores, ctx.config, p["type"], p["id"], p["key"], p["index"])
        return download_page(found)

    return _serve(req, work)


@bp.route(route="console/operations", methods=["GET"], auth_level=ANON)
def console_operations(req: func.HttpRequest) -> func.HttpResponse:
    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:
        from ..console.operations import operations_page

        return operations_page(ctx, dict(req.params), who)

    return _serve(req, work)


@bp.route(route="console/operations/mailboxes/{name}/enable", methods=["POST"], auth_level=ANON)
def console_mailbox_enable(req: func.HttpRequest) -> func.HttpResponse:
    def work(
        ctx: AppContext, req: func.HttpRequest, headers: dict[str, str], who: Principal
    ) -> Page:
        from ..console.operations import enable_mailbox

        form = _form(req, headers)
        return enable_mailbox(ctx, req.route_params["name"], form, headers, who)

    return _serve(req, work)


@bp.route(route="console/operations/poison/{queue}/replay", methods=["POST"], auth_level=ANON)
def console_poison_replay(req: func.HttpRequest) -> func.HttpResponse:
    def work(
        ctx: AppContext, req: func.HttpRequest, headers: dict[str, str], who: Principal
    ) -> Page:
        from ..console.operations import replay_poison

        form = _form(req, headers)
        return replay_poison(ctx, req.route_params["queue"], form, headers, who)

    return _serve(req, work)


@bp.route(route="console/operations/deliveries/replay", methods=["POST"], auth_level=ANON)
def console_delivery_replay(req: func.HttpRequest) -> func.HttpResponse:
    def work(
        ctx: AppContext, req: func.HttpRequest, headers: dict[str, str], who: Principal
    ) -> Page:
        from ..console.operations import replay_delivery

        return replay_delivery(ctx, _form(req, headers), headers, who)

    return _serve(req, work)


@bp.route(route="console/static/{name}", methods=["GET"], auth_level=ANON)
def console_static(req: func.HttpRequest) -> func.HttpResponse:
    """The console's own files (shared/console/static), by exact name: no path, no listing."""

    def work(ctx: AppContext, req: func.HttpRequest, _: dict[str, str], who: Principal) -> Page:  # noqa: ARG001
        from ..console.pages import Page, error_page
        from ..console.render import STATIC

        name = req.route_params["name"]
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        path = STATIC / name
        if not _STATIC.fullmatch(name) or suffix not in _STATIC_TYPES or not path.is_file():
            return error_page(404, "no such file")
        headers = {
            "Content-Type": _STATIC_TYPES[suffix],
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "public, max-age=3600",
        }
        return Page(200, path.read_bytes(), headers)

    return _serve(req, work)
