"""The console's pages: what each shows, from the services the HTTP API uses.

Each function returns a `Page` (status, HTML or bytes, headers); shared/functions/console.py
turns it into an HTTP answer. Record reads, updates and downloads go through
services/records.py and services/downloads.py, exactly as the API's do; the records list
pages through console/counts.py's index of the records instead (newest activity first across
pages, which the API's key-ordered pages cannot give; up to 30 s old).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from ..core.contracts import RecordRef
from ..core.mime import mail_bodies
from ..services.audit import Actor, audit, record_trail
from ..services.context import AppContext
from ..services.downloads import Download
from ..services.records import (
    PAGE_MAX,
    RecordError,
    etag,
    file_manually,
    record_type,
    representation,
    resolve,
    update_record,
    view,
)
from ..services.replies import reply_from_record
from . import counts
from .access import AGENT, Principal, check_change, csrf_token
from .mailview import document, has_remote_images, inline_images, policy
from .render import render

log = logging.getLogger(__name__)
BASE = "/api/console"  # host.json's routePrefix ("api") and the blueprint's routes
PAGE_SIZE = 50
FILTERS = ("type", "status", "mailbox", "contact", "q")
MAX_FILTER = 200
# What a change's redirect may ask the page to say: fixed words, never text from the request.
_ADDRESS_PARTS = re.compile(r'(?:"[^"]*"|[^,])+')
DONE = {
    "reply": "Your reply is queued; it shows in the timeline once it is sent.",
    "filed": "The mail is queued to be filed here; it shows in the timeline in a moment.",
}

# Console pages: no script at all, nothing from elsewhere, never framed.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": PAGE_CSP,
    "X-Frame-Options": "DENY",
    # No referrer ever leaves for another site. Not `no-referrer`: under it a browser sends
    # `Origin: null` with our own forms' POSTs, and the CSRF guard needs their real Origin.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass
class Page:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(PAGE_HEADERS))


def html_page(status: int, template: str, **values: Any) -> Page:
    started = time.perf_counter()
    body = render(template, base=BASE, **values).encode("utf-8")
    page = Page(status, body)
    page.headers["Server-Timing"] = f"render;dur={(time.perf_counter() - started) * 1000:.1f}"
    return page


def error_page(status: int, message: str) -> Page:
    return html_page(status, "error.html", code=status, message=message)


def record_url(view: Mapping[str, Any]) -> str:
    ident = view.get("id") or view["key"]
    return f"{BASE}/records/{quote(str(view['type']), safe='')}/{quote(str(ident), safe='')}"


def _filters(params: Mapping[str, str]) -> dict[str, str]:
    return {k: params[k].strip()[:MAX_FILTER] for k in FILTERS if params.get(k, "").strip()}


def scope_index(
    ctx: AppContext, chosen: Mapping[str, str]
) -> tuple[list[tuple[str, int]], list[counts.Brief], int]:
    """How many records of the chosen type, mailbox and contact have each status, those
    records newest activity first, and how many seconds ago they were read (console/counts.py:
    a scan, kept a while)."""
    found, index, age = counts.scope_index(ctx.stores, counts.scope_of(chosen))
    return found, index, int(age)


def list_page(ctx: AppContext, params: Mapping[str, str], who: Principal) -> Page:
    """Records, filtered, newest activity first across pages (console/counts.py's index),
    paged by number."""
    started = time.perf_counter()
    chosen = _filters(params)
    if "type" in chosen:
        record_type(ctx.config, chosen["type"])
    if "mailbox" in chosen and ctx.config.mailbox(chosen["mailbox"]) is None:
        raise RecordError(404, "unknown_mailbox", f"no mailbox {chosen['mailbox']!r}")
    size = params.get("limit", "").strip()
    if size:
        if not size.isascii() or not size.isdigit() or len(size) > 6:
            raise RecordError(400, "bad_limit", "limit must be a whole number")
        chosen["limit"] = size
    limit = int(size) if size else PAGE_SIZE
    if not 1 <= limit <= PAGE_MAX:
        raise RecordError(400, "bad_limit", f"limit must be between 1 and {PAGE_MAX}")
    types = [record_type(ctx.config, chosen["type"])] if "type" in chosen else None
    known = sorted({s for t in types or ctx.config.record_types for s in t.statuses})
    status = chosen.get("status")
    if status and status not in known:
        # As the API answers: a filter no record can match is a mistake, not an empty page.
        raise RecordError(
            422, "bad_status", f"unknown status {status[:80]!r}: one of {', '.join(known)}"
        )
    number = params.get("page", "1").strip() or "1"
    if not number.isascii() or not number.isdigit() or len(number) > 6 or int(number) < 1:
        raise RecordError(400, "bad_page", "page must be a whole number from 1")
    per_status, index, counted_ago = scope_index(ctx, chosen)
    needle = chosen.get("q", "").casefold()
    matching = [
        brief
        for brief in index
        if (not status or brief.status == status)
        and (not needle or needle in brief.title.casefold())
    ]
    start = (int(number) - 1) * limit
    rows = [brief.row() for brief in matching[start : start + limit]]
    for row in rows:
        row["url"] = record_url(row)
    statuses = sorted({s for t in ctx.config.record_types for s in t.statuses})
    more = start + limit < len(matching)
    next_url = f"{BASE}/records?{urlencode({**chosen, 'page': int(number) + 1})}" if more else None
    page = html_page(
        200,
        "list.html",
        who=who,
        records=rows,
        chosen=chosen,
        types=[t.name for t in ctx.config.record_types],
        statuses=statuses,
        mailboxes=[m.name for m in ctx.config.mailboxes],
        counts=per_status,
        counted_ago=counted_ago,
        # What a status count's link keeps of the filters (not the text, which counts ignore).
        scope="".join(
            f"{k}={quote(chosen[k], safe='')}&"
            for k in ("type", "mailbox", "contact")
            if k in chosen
        ),
        next_url=next_url,
        first_url=f"{BASE}/records?{urlencode(chosen)}" if int(number) > 1 else None,
    )
    elapsed = (time.perf_counter() - started) * 1000
    page.headers["Server-Timing"] = f"total;dur={elapsed:.1f}, " + page.headers["Server-Timing"]
    log.info("console: list page (%d records) in %.1f ms", len(rows), elapsed)
    return page


def console_actor(who: Principal) -> Actor:
    """The signed-in person, as the audit trail names them."""
    return Actor(name=who.name, source="console")


def record_page(
    ctx: AppContext,
    type_name: str,
    ident: str,
    who: Principal,
    *,
    notice: str | None = None,
    status: int = 200,
    draft: Mapping[str, str] | None = None,
) -> Page:
    record = resolve(ctx.stores, ctx.config, type_name, ident)
    body = representation(ctx.stores, record)
    ref = RecordRef(type=record["PartitionKey"], key=record["RowKey"])
    rtype = record_type(ctx.config, ref.type)
    if status == 200:
        audit(ctx.stores, console_actor(who), "read", ref, "console page", datetime.now(UTC))
    tag = etag(body)  # of the representation as the API answers it, before links are added
    url = record_url(body)
    for entry in body["timeline"]:
        entry["url"] = f"{url}/mail/{entry['message_key']}"
    return html_page(
        status,
        "record.html",
        who=who,
        record=body,
        url=url,
        etag=tag,
        statuses=rtype.statuses,
        can_edit=who.can(AGENT),
        csrf=csrf_token(who),
        trail=list(record_trail(ctx.stores, ref)),
        notice=notice,
        # The reply form: what was typed (after a refusal), else the API's defaults.
        draft={
            "to": body.get("contact") or "",
            "cc": "",
            "subject": "",
            "body": "",
            **(draft or {}),
        },
    )


def _entry(ctx: AppContext, type_name: str, ident: str, key: str) -> tuple[dict[str, Any], Any]:
    record = resolve(ctx.stores, ctx.config, type_name, ident)
    body = representation(ctx.stores, record)
    for entry in body["timeline"]:
        if entry["message_key"] == key:
            return body, entry
    raise RecordError(404, "unknown_message", "no such message on this record")


def _bodies(ctx: AppContext, entry: Mapping[str, Any]) -> tuple[str | None, str | None]:
    raw = ctx.stores.blobs.get(entry["raw"]) if entry.get("raw") else None
    if raw is None:
        return entry.get("text") or "", None  # the reply text is all Mailfiler kept
    return mail_bodies(raw)


def mail_page(
    ctx: AppContext,
    type_name: str,
    ident: str,
    key: str,
    images: bool,
    who: Principal,
    *,
    notice: str | None = None,
    status: int = 200,
) -> Page:
    """One mail of a record: its headers, attachments, raw mail and body (in the frame)."""
    record, entry = _entry(ctx, type_name, ident, key)
    url = record_url(record)
    mail_url = f"{url}/mail/{key}"
    _, markup = _bodies(ctx, entry)
    return html_page(
        status,
        "mail.html",
        who=who,
        record=record,
        url=url,
        entry=entry,
        mail_url=mail_url,
        frame_url=f"{mail_url}/body" + ("?images=1" if images else ""),
        images=images,
        remote_images=markup is not None and has_remote_images(markup),
        can_edit=who.can(AGENT),
        csrf=csrf_token(who),
        types=[t.name for t in ctx.config.record_types],
        notice=notice,
    )


def mail_body(ctx: AppContext, type_name: str, ident: str, key: str, images: bool) -> Page:
    """The frame's document: the mail's body, sanitised, under a policy of its own."""
    _, entry = _entry(ctx, type_name, ident, key)
    plain, markup = _bodies(ctx, entry)
    inline: dict[str, str] = {}
    if markup is not None and "cid:" in markup.lower():
        raw = ctx.stores.blobs.get(entry["raw"]) if entry.get("raw") else None
        inline = inline_images(raw) if raw is not None else {}
    csp = policy(images)
    return Page(
        200,
        document(plain, markup, images, inline).encode("utf-8"),
        {
            "Content-Type": "text/html; charset=utf-8",
            # `sandbox` here too: opened on its own (not in our frame) it still runs nothing.
            "Content-Security-Policy": f"{csp}; sandbox",
            "X-Frame-Options": "SAMEORIGIN",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


def download_page(found: Download) -> Page:
    return Page(200, found.data, found.headers())


def change_status(
    ctx: AppContext,
    type_name: str,
    ident: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    who: Principal,
) -> Page:
    """The status form: checked for CSRF, then PATCH's own update with the page's ETag."""
    check_change(headers, form.get("csrf"), who, AGENT)
    record = resolve(ctx.stores, ctx.config, type_name, ident)
    now = datetime.now(UTC)
    try:
        full = update_record(
            ctx.stores,
            ctx.config,
            record,
            {"status": form.get("status", "")},
            console_actor(who),
            now,
            if_match=form.get("etag") or None,
        )
    except RecordError as exc:
        if exc.status in (409, 412, 422):
            return record_page(ctx, type_name, ident, who, notice=exc.message, status=exc.status)
        raise
    counts.changed(ctx.stores, str(full["type"]), str(full["key"]), str(full["status"]), now)
    log.info("console: %s set %s to %s", who.name, full.get("id"), full.get("status"))
    return see_other(record_url(full))


def see_other(url: str, done: str | None = None) -> Page:
    """After a change: the page to show next (with `?done=` naming the notice), never cached."""
    location = f"{url}?done={done}" if done else url
    return Page(303, b"", {"Location": location, "Cache-Control": "no-store"})


def done_notice(params: Mapping[str, str]) -> str | None:
    return DONE.get(params.get("done", ""))


def _address_list(value: str) -> list[str]:
    """Addresses as typed in one field, split at commas outside quotes ("Doe, Jo" <jo@x.org>);
    each goes to the reply service as typed, which refuses what is not one address, naming it."""
    return [part.strip() for part in _ADDRESS_PARTS.findall(value) if part.strip()]


def reply(
    ctx: AppContext,
    type_name: str,
    ident: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    who: Principal,
) -> Page:
    """The reply form: checked for CSRF, then the reply API's own service (the record's token
    in the subject, our signed Message-ID when sent). Empty fields take the API's defaults."""
    check_change(headers, form.get("csrf"), who, AGENT)
    record = resolve(ctx.stores, ctx.config, type_name, ident)
    draft = {k: form.get(k, "") for k in ("to", "cc", "subject", "body")}
    body: dict[str, Any] = {"body": draft["body"]}
    for name in ("to", "cc"):
        if draft[name].strip():
            body[name] = _address_list(draft[name])
    if draft["subject"].strip():
        body["subject"] = draft["subject"]
    try:
        mail = reply_from_record(ctx.stores, ctx.config, record, body, who.name)
    except RecordError as exc:
        if exc.status in (400, 413, 422):
            return record_page(
                ctx, type_name, ident, who, notice=exc.message, status=exc.status, draft=draft
            )
        raise
    audit(ctx.stores, console_actor(who), "reply", mail.record, f"reply {mail.id} queued", _now())
    log.info("console: %s queued reply %s on %s", who.name, mail.id, record.get("DisplayId"))
    return see_other(record_url(view(record)), "reply")


def file_elsewhere(
    ctx: AppContext,
    type_name: str,
    ident: str,
    key: str,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    who: Principal,
) -> Page:
    """File this mail on another record: the API's POST .../messages, by the mail's
    Message-ID, onto the record the form names (type and id)."""
    check_change(headers, form.get("csrf"), who, AGENT)
    here, entry = _entry(ctx, type_name, ident, key)

    def refused(status: int, message: str) -> Page:
        return mail_page(ctx, type_name, ident, key, False, who, notice=message, status=status)

    if not entry.get("message_id"):
        return refused(422, "this mail has no Message-ID; file it by mailbox and source id")
    target_type = form.get("target_type", "").strip()[:MAX_FILTER]
    target_id = form.get("target_id", "").strip()[:MAX_FILTER]
    if not target_type or not target_id:
        return refused(400, "name the record: its type and its id")
    try:
        target = resolve(ctx.stores, ctx.config, target_type, target_id)
        if (target["PartitionKey"], target["RowKey"]) == (here["type"], here["key"]):
            return refused(422, "the mail is already on this record")
        file_manually(
            ctx.stores,
            ctx.config,
            target,
            {"message_id": entry["message_id"]},
            console_actor(who),
            _now(),
        )
    except RecordError as exc:
        if exc.status in (400, 404, 422):
            return refused(exc.status, exc.message)
        raise
    log.info("console: %s filed %s on %s", who.name, key[:80], target.get("DisplayId"))
    return see_other(record_url(view(target)), "filed")


def _now() -> datetime:
    return datetime.now(UTC)
