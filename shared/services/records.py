"""Records as the HTTP API and the CLI see them: list, get with timeline, update, file mail.

Errors are `RecordError`s with an HTTP status and a message that says what to fix; the HTTP
layer turns them into JSON answers.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import heapq
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from azure.core.exceptions import HttpResponseError

from ..core.config import Config, RecordType
from ..core.contracts import Event, FilingPlan, InboundMessage, RecordRef
from ..core.decide import timeline_entry
from ..core.errors import MailfilerError
from ..core.message import id_key
from ..core.reply_text import reply_text
from ..store import conversations, numbers, records
from ..store import messages as message_rows
from ..store import timeline as timeline_rows
from ..store.errors import StorageLimitError as StorageLimitError  # for the HTTP layer
from ..store.keys import FILED, INDEX_ROWS, source_key
from ..store.record_index import RECORD_KEY
from ..store.stores import (
    FILING,
    INGEST,
    Stores,
)
from ..store.tables import check_key
from .audit import Actor, audit
from .events import emit, enabled, event_id
from .inbound import parse_inbound

PAGE_MAX = 200
# Record numbers are ASCII digits, at most 12 of them (store/keys.py numbers rows below 10**12).
# str.isdigit() is not the test: it takes "²" (which int() refuses) and "٣" (which it reads as 3).
_NUMBER = re.compile(r"[0-9]{1,12}")
INT64 = range(-(2**63), 2**63)  # what Table Storage holds in an Edm.Int64
MAX_TEXT_BYTES = 64 * 1024  # Table Storage's limit on one string property, counted in UTF-16
MAX_TOKEN = 4096  # characters of a continuation token; ours are a few hundred
# A token is ours: where the page stopped in the list's order (index RowKey, then type name):
# {"after": the index RowKey of the last record listed, "type": its type}.
_TOKEN_KEYS = frozenset({"after", "type"})
MAX_ROW_KEY = 1024  # Table Storage's limit on a RowKey
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class RecordError(MailfilerError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def record_type(config: Config, name: str) -> RecordType:
    found = config.record_type(name)
    if found is None:
        known = ", ".join(t.name for t in config.record_types)
        raise RecordError(404, "unknown_type", f"no record type {name!r} (known: {known})")
    return found


def resolve(stores: Stores, config: Config, type_name: str, ident: str) -> dict[str, Any]:
    """A record by display id (`CASE-12`), number (`12`) or key."""
    rtype = record_type(config, type_name)
    number = ident.upper().removeprefix(f"{rtype.prefix}-")
    key = ident
    if _NUMBER.fullmatch(number):
        numbered = numbers.numbered(stores, rtype.name, int(number))
        if numbered is None:
            raise RecordError(404, "not_found", f"no {rtype.name} record number {number}")
        key = numbered
    try:
        check_key("RowKey", key)
    except StorageLimitError:
        raise RecordError(404, "not_found", f"no {rtype.name} record {ident[:80]!r}") from None
    record = records.get(stores, RecordRef(type=rtype.name, key=key)) if key else None
    if record is None:
        raise RecordError(404, "not_found", f"no {rtype.name} record {ident!r}")
    return record


def view(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": record["PartitionKey"],
        "key": record["RowKey"],
        "id": record.get("DisplayId"),
        "number": record.get("Number"),
        "title": record.get("Title", ""),
        "status": record.get("Status"),
        "contact": record.get("Contact"),
        "mailbox": record.get("Mailbox"),
        "tags": [t for t in str(record.get("Tags") or "").split(",") if t],
        "fields": {
            k.removeprefix(records.FIELD): v
            for k, v in record.items()
            if k.startswith(records.FIELD)
        },
        "created_at": _iso(record.get("CreatedAt")),
        "updated_at": _iso(record.get("UpdatedAt")),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def timeline(stores: Stores, record: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "message_key": e.get("MessageKey"),
            "message_id": e.get("MessageId") or None,
            "direction": e.get("Direction"),
            "kind": e.get("Kind", "human"),
            "date": _iso(e.get("Date")),
            "from": e.get("From"),
            "to": e.get("To"),
            "cc": e.get("Cc"),
            "subject": e.get("Subject"),
            "snippet": e.get("Snippet"),
            "text": e.get("Text"),
            "text_blob": e.get("TextBlob"),
            "attachments": _attachments(e.get("Attachments")),
            "mailbox": e.get("Mailbox"),
            "folder": e.get("Folder"),
            "raw": e.get("Blob"),
            "flag": e.get("Flag"),  # why the mail is suspect (a claim of our address), or null
        }
        for e in timeline_rows.entries(stores, records.ref_of(record))
    ]


def _attachments(value: Any) -> list[dict[str, Any]]:
    try:
        items = json.loads(value) if value else []
    except ValueError:
        return []
    return items if isinstance(items, list) else []


def _encode_token(token: dict[str, str] | None) -> str | None:
    if token is None:
        return None  # the list has ended
    return base64.urlsafe_b64encode(json.dumps(token, sort_keys=True).encode()).decode()


def _decode_token(token: str | None, types: list[str]) -> tuple[str, str] | None:
    """Where the list goes on (the last index RowKey and type listed), from our token, checked:
    the client wrote it, so any shape but the one we hand out for these types is refused here
    rather than in the service."""
    if not token:
        return None
    bad = RecordError(400, "bad_continuation", "continuation token is not valid")
    if len(token) > MAX_TOKEN or not token.isascii():
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise bad from exc
    if not isinstance(value, dict) or set(value) != _TOKEN_KEYS or value["type"] not in types:
        raise bad
    after = value["after"]
    if (
        not isinstance(after, str)
        or len(after) > MAX_ROW_KEY
        or not after.startswith(INDEX_ROWS)
        or _CONTROL.search(after)
    ):
        raise bad
    try:
        check_key("RowKey", after)
    except StorageLimitError as exc:
        raise bad from exc
    return after, value["type"]


def all_records(stores: Stores) -> Iterator[dict[str, Any]]:
    """Every record of every type (for the CLI and tests; the API pages)."""
    yield from records.all_records(stores)


def list_records(
    stores: Stores,
    config: Config,
    *,
    type_name: str | None,
    status: str | None,
    contact: str | None,
    text: str | None,
    limit: int,
    continuation: str | None,
    mailbox: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of records, filtered, newest first (by creation, then number) across the types
    asked for; the token continues where the page stopped. Read from the records' index rows
    (store/record_index.py): a record shows as soon as it is written."""
    if not 1 <= limit <= PAGE_MAX:
        raise RecordError(400, "bad_limit", f"limit must be between 1 and {PAGE_MAX}")
    types = [record_type(config, type_name)] if type_name else list(config.record_types)
    known = sorted({s for t in types for s in t.statuses})
    if status and status not in known:
        # A filter no record can match is a mistake to name, not an empty page.
        raise RecordError(
            422, "bad_status", f"unknown status {status[:80]!r}: one of {', '.join(known)}"
        )
    records.ensure_index(stores)
    names = [t.name for t in types]
    cursor = _decode_token(continuation, names)
    # Each type's index rows come newest first: read up to one more than a page of each from
    # where the list stopped (the order is index RowKey, then type name), merge them, keep a
    # page; a row read and not kept says the list goes on.
    fetched: list[tuple[str, str, dict[str, Any]]] = []
    try:
        for name in names:
            rows = records.newest(
                stores,
                name,
                after=cursor[0] if cursor else None,
                inclusive=cursor is not None and name > cursor[1],
                status=status,
                contact=contact.lower() if contact else None,
                mailbox=mailbox,
                limit=limit + 1,
            )
            fetched += [(row["RowKey"], name, row) for row in rows]
    except HttpResponseError as exc:
        if exc.status_code != 400:
            raise
        # The service refused the query: only the caller's filters or token can make it so.
        raise RecordError(
            400, "bad_query", "the filters or continuation token are not valid"
        ) from exc
    page = heapq.nsmallest(limit, fetched, key=lambda item: (item[0], item[1]))
    token = {"after": page[-1][0], "type": page[-1][1]} if len(fetched) > len(page) else None
    rows = [view({**row, "RowKey": row[RECORD_KEY]}) for _, _, row in page]
    if text:
        # Table Storage has no text search: the page is filtered here, so a page may hold fewer
        # than `limit` records while the token still leads on.
        needle = text.casefold()
        rows = [r for r in rows if needle in r["title"].casefold()]
    return rows, _encode_token(token)


def representation(stores: Stores, record: dict[str, Any]) -> dict[str, Any]:
    """What GET /api/records/{type}/{id} answers: the record with its timeline."""
    return {**view(record), "timeline": timeline(stores, record)}


def etag(body: dict[str, Any]) -> str:
    """A strong ETag: the SHA-256 of the representation itself, so it changes exactly when a
    byte of the answer would (the record's fields, status, title or a timeline entry) and not
    on a read (audit rows are not part of the timeline)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32] + '"'


def matches(if_match: str, current: str) -> bool:
    """If-Match with RFC 9110's strong comparison: `*` or one of the listed tags; a weak tag
    (W/"...") never matches."""
    if if_match.strip() == "*":
        return True
    return any(tag.strip() == current for tag in if_match.split(","))


def _changes(rtype: RecordType, body: Any) -> dict[str, Any]:
    """The properties a PATCH body asks for, each checked against the record type."""
    if not isinstance(body, dict) or not body:
        raise RecordError(400, "bad_body", "send a JSON object with 'fields' and/or 'status'")
    unknown = sorted(str(k) for k in set(body) - {"fields", "status"})
    if unknown:
        close = difflib.get_close_matches(unknown[0], ["fields", "status"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecordError(
            400,
            "bad_body",
            f"unknown key {unknown[0][:80]!r}{hint}: send a JSON object with 'fields' and/or "
            "'status'",
        )
    changes: dict[str, Any] = {}
    status = body.get("status")
    if status is not None:
        if not isinstance(status, str) or status not in rtype.statuses:
            raise RecordError(
                422, "bad_status", f"status must be one of {', '.join(rtype.statuses)}"
            )
        changes["Status"] = status
    fields = body.get("fields")
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise RecordError(400, "bad_body", "'fields' must be an object")
    for name, value in fields.items():
        spec = rtype.field(name)
        if spec is None:
            raise RecordError(422, "unknown_field", f"{rtype.name} has no field {name[:80]!r}")
        if value is None:
            continue
        if spec.type == "int" and not (
            isinstance(value, int) and not isinstance(value, bool) and value in INT64
        ):
            raise RecordError(
                422, "bad_field", f"field {spec.name} must be an integer from -2^63 to 2^63-1"
            )
        if spec.type == "choice" and value not in spec.choices:
            raise RecordError(
                422, "bad_field", f"field {spec.name} must be one of {', '.join(spec.choices)}"
            )
        if spec.type == "date":
            try:
                value = datetime.fromisoformat(str(value)).date().isoformat()
            except ValueError as exc:
                raise RecordError(422, "bad_field", f"field {spec.name} must be a date") from exc
        if spec.type == "text":
            if not isinstance(value, str):
                raise RecordError(422, "bad_field", f"field {spec.name} must be a string")
            if len(value.encode("utf-16-le", "surrogatepass")) > MAX_TEXT_BYTES:
                raise RecordError(
                    422, "bad_field", f"field {spec.name} is over 64 KiB (as UTF-16) of text"
                )
        changes[f"F_{spec.name}"] = value
    return changes


def update_record(
    stores: Stores,
    config: Config,
    record: dict[str, Any],
    body: Any,
    actor: Actor,
    now: datetime,
    *,
    if_match: str | None = None,
) -> dict[str, Any]:
    """PATCH: fields (checked against the type) and status (one of the type's). With `if_match`,
    only if the record's representation still has that ETag (412 otherwise). A PATCH that
    changes nothing writes nothing: no audit row, no event. Returns the record's
    representation (with its timeline) after the change."""
    rtype = record_type(config, record["PartitionKey"])
    changes = _changes(rtype, body)
    current = representation(stores, record)
    if if_match is not None and not matches(if_match, etag(current)):
        raise RecordError(
            412, "precondition_failed", "the record changed since that ETag; read it again"
        )
    changes = {k: v for k, v in changes.items() if record.get(k) != v}
    if not changes:
        return current
    ref = records.ref_of(record)
    if not records.merge_if_unchanged(
        stores, ref, {"UpdatedAt": now, **changes}, record["_etag"], current=record
    ):
        if if_match is not None:  # it changed after the check: the precondition no longer holds
            raise RecordError(
                412, "precondition_failed", "the record changed since that ETag; read it again"
            )
        raise RecordError(409, "conflict", "the record changed meanwhile; read it and try again")
    detail = json.dumps({k.removeprefix("F_"): v for k, v in changes.items()}, default=str)
    audit(stores, actor, "update", ref, detail[:2000], now)
    if enabled(config):
        emit(
            stores,
            [
                Event(
                    id=event_id("record.updated", ref.type, ref.key, now.isoformat()),
                    type="record.updated",
                    occurred_at=now,
                    record=ref,
                    display_id=record.get("DisplayId"),
                    data={k: v for k, v in changes.items() if isinstance(v, (str, int, bool))},
                )
            ],
        )
    updated = records.get(stores, ref)
    assert updated is not None
    return representation(stores, updated)


def file_manually(
    stores: Stores, config: Config, record: dict[str, Any], body: Any, actor: Actor, now: datetime
) -> FilingPlan:
    """POST .../messages: file a mail Mailfiler has seen onto this record. Its conversation then
    follows: replies find it through the message index and the conversation index."""
    if not isinstance(body, dict):
        raise RecordError(400, "bad_body", "send {'message_id': ...} or {'mailbox', 'source_id'}")
    blob, mailbox, source_id, folder = _locate(stores, config, body)
    inbound = InboundMessage(mailbox=mailbox, source_id=source_id, blob=blob, folder=folder)
    message = parse_inbound(stores, inbound)
    ref = records.ref_of(record)
    text = reply_text(message.text)
    plan = FilingPlan(
        action="attach",
        message_key=message.key,
        mailbox=mailbox,
        source_id=source_id,
        blob=blob,
        folder=folder,
        record=ref,
        entry=timeline_entry(message, text, "in", "human"),
        conversation_id=message.conversation_id,
        reasons=(f"filed by hand by {actor.name} ({actor.source})",),
    )
    stores.queues.send(FILING, plan)
    if message.conversation_id:
        conversations.link(stores, mailbox, message.conversation_id, ref)
    audit(stores, actor, "file_message", ref, f"{message.key[:80]} from {mailbox}", now)
    return plan


def _locate(
    stores: Stores, config: Config, body: dict[str, Any]
) -> tuple[str, str, str, str | None]:
    """The raw mail's blob, mailbox, source id and folder of a mail named by the request."""
    if set(body) == {"message_id"}:
        if not isinstance(body["message_id"], str):
            raise RecordError(400, "bad_body", "message_id must be a string")
        mid = body["message_id"].strip().strip("<>")
        if not mid:
            raise RecordError(400, "bad_body", "message_id is empty")
        rows = list(message_rows.rows(stores, id_key(mid)))
        seen = [r for r in rows if r.get("Blob") and r.get("Mailbox")]
        if not seen:
            raise RecordError(404, "unknown_message", f"Mailfiler has not seen <{mid}>")
        row = next((r for r in seen if r["RowKey"] == FILED), seen[0])
        return row["Blob"], row["Mailbox"], row["SourceId"], row.get("Folder")
    if set(body) == {"mailbox", "source_id"}:
        mailbox, source_id = body["mailbox"], body["source_id"]
        if not isinstance(mailbox, str) or not isinstance(source_id, str):
            raise RecordError(400, "bad_body", "mailbox and source_id must be strings")
        if not mailbox or not source_id:
            raise RecordError(400, "bad_body", "mailbox and source_id must not be empty")
        if config.mailbox(mailbox) is None:
            raise RecordError(404, "unknown_mailbox", f"no mailbox {mailbox!r}")
        ingested = stores.table(INGEST).get(mailbox, source_key(source_id))
        if ingested is None:
            raise RecordError(
                404, "unknown_message", f"mailbox {mailbox!r} has no ingested message {source_id!r}"
            )
        return ingested["Blob"], mailbox, source_id, None
    raise RecordError(400, "bad_body", "send {'message_id': ...} or {'mailbox', 'source_id'}")
