"""The Graph REST surface of the fake (everything under /v1.0), including JSON batching.

Each handler cites the page whose request/response shape it follows. Every request, including
each inner request of a ``$batch``, passes the same gate: bearer token check, mailbox
concurrency tracking, fault injection, then routing; errors come back as
``{"error": {"code", "message", "innerError": {date, request-id, client-request-id}}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.fakes import harness
from tests.fakes.graph_auth import Token
from tests.fakes.graph_faults import RequestRecord, sleep
from tests.fakes.graph_model import (
    FLAG_STATUSES,
    JSON,
    MESSAGE_PROPERTIES,
    ROOT,
    Flag,
    Folder,
    GraphError,
    Mailbox,
    Message,
    event_json,
    folder_json,
    message_json,
    new_guid,
    parse_datetime,
    parse_dttz,
    parse_select,
)
from tests.fakes.graph_store import DeltaState
from tests.fakes.harness import Reply

if TYPE_CHECKING:
    from tests.fakes.graph import FakeGraph

JSON_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"
    "charset=utf-8"
)
MAX_BATCH = 20
DEFAULT_DELTA_PAGE = 10
DEFAULT_LIST_PAGE = 10


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """A JSON answer with Graph's OData content type."""
    return harness.json_reply(status, payload, headers, content_type=JSON_TYPE)


@dataclass
class Call:
    method: str
    path: str  # decoded, e.g. /v1.0/users/a@x.com/messages/ID
    segments: list[str]  # decoded segments after /v1.0, "x('y')" split into "x", "y"
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    token: Token
    box: Mailbox | None
    user_segment: str  # the user as the request wrote it

    def json_body(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise GraphError(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set "
                "and payload is of valid JSON format.",
            ) from exc

    def obj_body(self) -> dict[str, Any]:
        body = self.json_body()
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        return body


def split_target(target: str) -> tuple[str, str]:
    raw_path, _, raw_query = target.partition("?")
    return raw_path, raw_query


def segments_of(raw_path: str) -> list[str]:
    """'/v1.0/users('a%40b')/mailFolders('inbox')/messages' -> ['users','a@b','mailFolders',...]."""
    rest = raw_path[len("/v1.0") :] if raw_path.startswith("/v1.0") else raw_path
    for encoded, char in (("%27", "'"), ("%28", "("), ("%29", ")")):
        rest = re.sub(encoded, char, rest, flags=re.I)
    rest = re.sub(r"\('([^']*)'\)", r"/\1", rest)
    return [urllib.parse.unquote(s) for s in rest.strip("/").split("/") if s != ""]


def parse_query(raw_query: str) -> dict[str, str]:
    parsed = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def prefer_values(headers: dict[str, str]) -> list[str]:
    return [p.strip() for p in headers.get("prefer", "").split(",") if p.strip()]


class GraphApi:
    def __init__(self, fake: FakeGraph) -> None:
        self.fake = fake

    # --- gate -------------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        *,
        authorization: str | None = None,
        in_batch: bool = False,
    ) -> Reply:
        fake = self.fake
        started = time.time()
        clock = time.perf_counter()
        request_id = new_guid()
        raw_path, raw_query = split_target(target)
        segments = segments_of(raw_path)
        path = "/v1.0/" + "/".join(segments)
        token: Token | None = None
        box: Mailbox | None = None
        entered = False
        try:
            token = fake.tokens.check_bearer(authorization or headers.get("authorization"))
            if len(segments) > 1 and segments[0].lower() == "users":
                box = fake.store.mailbox(segments[1])
                if box.tenant and box.tenant.lower() != token.tenant.lower():
                    raise GraphError(
                        403,
                        "ErrorAccessDenied",
                        "Access is denied. Check credentials and try again.",
                    )
                if not fake.tracker.enter(box.key, fake.concurrency_limit):
                    raise GraphError(
                        429,
                        "ApplicationThrottled",
                        "Application is over its MailboxConcurrency limit.",
                        {"Retry-After": str(fake.concurrency_retry_after)},
                    )
                entered = True
            delay, fault = fake.faults.pick(method, path)
            sleep(delay)
            if fault is not None and fault.status is not None:
                extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                raise GraphError(
                    fault.status, fault.code or "UnknownError", fault.message or "", extra
                )
            call = Call(
                method.upper(),
                path,
                segments,
                parse_query(raw_query),
                raw_query,
                headers,
                body,
                token,
                box,
                segments[1] if box else "",
            )
            reply = self.route(call)
        except GraphError as exc:
            reply = json_reply(
                exc.status,
                exc.body(request_id, headers.get("client-request-id")),
                exc.headers,
            )
        finally:
            if entered and box is not None:
                fake.tracker.leave(box.key)
        reply.headers.setdefault("request-id", request_id)
        reply.headers.setdefault("client-request-id", headers.get("client-request-id", request_id))
        fake.log(
            RequestRecord(
                method.upper(),
                path,
                raw_query,
                reply.status,
                box.key if box else None,
                token.tenant if token else None,
                token.client_id if token else None,
                in_batch,
                headers.get("prefer"),
                started,
                time.perf_counter() - clock,
                headers.get("if-match"),
            )
        )
        return reply

    # --- routing ----------------------------------------------------------------------------------

    def route(self, call: Call) -> Reply:
        s = call.segments
        low = [x.lower() for x in s]
        m = call.method
        if not s:
            raise GraphError(400, "BadRequest", "Invalid version.")
        if low == ["$batch"]:
            return self._only(m, "POST") or self.batch(call)
        if low[0] == "me":
            raise GraphError(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        if low[0] == "subscriptions":
            return self.subscriptions(call, s[1:])
        if low[0] == "users" and call.box is not None:
            return self.user_routes(call, s[2:], low[2:])
        if low[0] == "users":
            raise GraphError(400, "BadRequest", "Resource not found for the segment 'users'.")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{s[0]}'.")

    def send_mail(self, call: Call) -> Reply:
        """POST /users/{id}/sendMail in its MIME form ("Send Outlook messages in MIME format"):
        Content-Type text/plain, the body the base64 of the message; 202, and a copy in Sent
        Items. The JSON form is not modelled."""
        box = call.box
        assert box is not None
        if not call.headers.get("content-type", "").lower().startswith("text/plain"):
            raise GraphError(400, "ErrorMimeContentInvalid", "Only the MIME form is modelled.")
        try:
            mime = base64.b64decode(call.body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise GraphError(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            ) from exc
        if not mime.strip():
            raise GraphError(400, "ErrorMimeContentInvalid", "The MIME content is empty.")
        self.fake.sent_mail.append((box.upn or box.id, mime))
        self.fake.store.add_message(box, "sentitems", mime, is_read=True)
        return Reply(202, b"", {})

    @staticmethod
    def _only(method: str, *allowed: str) -> Reply | None:
        if method not in allowed:
            raise GraphError(
                405,
                "Request_BadRequest",
                "Specified HTTP method is not allowed for the request target.",
            )
        return None

    def user_routes(self, call: Call, rest: list[str], low: list[str]) -> Reply:
        """Mailbox routes run under the store lock: a response is one consistent snapshot."""
        with self.fake.store.lock:
            return self._user_routes(call, rest, low)

    def _user_routes(self, call: Call, rest: list[str], low: list[str]) -> Reply:
        box = call.box
        assert box is not None
        store = self.fake.store
        if not rest:
            self._only(call.method, "GET")
            return json_reply(200, self.user_json(box))
        if low[0] == "mailfolders":
            if len(rest) == 1:
                self._only(call.method, "GET", "POST")
                root = store.folder(box, ROOT)
                if call.method == "POST":
                    return self.create_folder(call, root)
                return self.list_folders(call, root, "mailFolders")
            folder = store.folder(box, rest[1])
            if len(rest) == 2:
                self._only(call.method, "GET")
                return json_reply(200, self.folder_entity(call, folder))
            if low[2] == "childfolders" and len(rest) == 3:
                self._only(call.method, "GET", "POST")
                if call.method == "POST":
                    return self.create_folder(call, folder)
                return self.list_folders(call, folder, f"mailFolders('{folder.id}')/childFolders")
            if low[2] == "messages":
                if len(rest) == 3:
                    self._only(call.method, "GET")
                    return self.list_messages(call, folder)
                if low[3] == "delta" and len(rest) == 4:
                    self._only(call.method, "GET")
                    return self.delta(call, folder)
                msg = store.message(box, rest[3])
                if msg.folder_id != folder.id:
                    raise GraphError(
                        404, "ErrorItemNotFound", "The specified object was not found in the store."
                    )
                return self.message_routes(call, msg, low[4:])
        if low == ["sendmail"]:
            self._only(call.method, "POST")
            return self.send_mail(call)
        if low[0] == "messages":
            if len(rest) == 1:
                self._only(call.method, "GET")
                return self.list_messages(call, None)
            return self.message_routes(call, store.message(box, rest[1]), low[2:])
        if low[0] == "events":
            if len(rest) == 1:
                self._only(call.method, "GET", "POST")
                return self.create_event(call) if call.method == "POST" else self.list_events(call)
            if len(rest) == 2:
                return self.event_routes(call, rest[1])
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")

    def ctx(self, call: Call, tail: str) -> str:
        return f"{self.fake.graph_url}/$metadata#users('{call.user_segment}')/{tail}"

    def user_json(self, box: Mailbox) -> JSON:
        """user resource type (default properties)."""
        return {
            "@odata.context": f"{self.fake.graph_url}/$metadata#users/$entity",
            "businessPhones": [],
            "displayName": box.display_name,
            "givenName": None,
            "jobTitle": None,
            "mail": box.upn,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": None,
            "surname": None,
            "userPrincipalName": box.upn or box.id,
            "id": box.id,
        }

    # --- messages (message resource; get, update, move, delete, $value) ---------------------------

    def message_routes(self, call: Call, msg: Message, tail: list[str]) -> Reply:
        box = call.box
        assert box is not None
        store = self.fake.store
        if tail == ["$value"]:
            self._only(call.method, "GET")
            return Reply(200, msg.mime, {"Content-Type": "text/plain"})
        if tail == ["move"]:
            self._only(call.method, "POST")
            body = call.obj_body()
            dest = body.get("destinationId")
            if not isinstance(dest, str) or not dest:
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            moved = store.move_message(box, msg.id, dest)
            entity = {"@odata.context": self.ctx(call, "messages/$entity")} | message_json(moved)
            return json_reply(201, entity)
        if tail:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{tail[0]}'.")
        self._only(call.method, "GET", "PATCH", "DELETE")
        if call.method == "DELETE":
            store.delete_message(box, msg.id)
            return Reply(204)
        if call.method == "PATCH":
            self.fake.run_user_edits(box, msg.id)
            check_if_match(call.headers.get("if-match"), msg.etag)
            msg = self.patch_message(call, msg)
            return json_reply(200, self.message_entity(call, msg, None))
        select = parse_select(call.query.get("$select"))
        return json_reply(200, self.message_entity(call, msg, select))

    def message_entity(self, call: Call, msg: Message, select: list[str] | None) -> JSON:
        tail = f"messages({','.join(select)})/$entity" if select else "messages/$entity"
        return {"@odata.context": self.ctx(call, tail)} | message_json(msg, select)

    def patch_message(self, call: Call, msg: Message) -> Message:
        box = call.box
        assert box is not None
        body = call.obj_body()
        updates: dict[str, Any] = {}
        for name, value in body.items():
            if name == "isRead":
                if not isinstance(value, bool):
                    raise GraphError(400, "BadRequest", "isRead must be a boolean.")
                updates["is_read"] = value
            elif name == "categories":
                if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                    raise GraphError(400, "BadRequest", "categories must be a list of strings.")
                updates["categories"] = value
            elif name == "flag":
                updates["flag"] = flag_from_json(value, self.fake.clock.now())
            elif name == "importance":
                if value not in {"low", "normal", "high"}:
                    raise GraphError(400, "BadRequest", f"Invalid importance '{value}'.")
                updates["importance"] = value
            elif name == "inferenceClassification":
                updates["inference"] = str(value)
            elif name == "subject":
                updates["subject"] = str(value)
            elif name.startswith("@odata") or name in MESSAGE_PROPERTIES or name == "id":
                continue  # read-only here; Graph ignores them for received items
            else:
                raise GraphError(
                    400,
                    "RequestBodyRead",
                    f"The property '{name}' does not exist on type 'Microsoft.OutlookServices."
                    "Message'. Make sure to only use property names that are defined by the type.",
                )
        return self.fake.store.update_message(box, msg.id, **updates)

    def list_messages(self, call: Call, folder: Folder | None) -> Reply:
        """GET .../messages: default page of 10, $top/$skip, $select, receivedDateTime filter."""
        box = call.box
        assert box is not None
        store = self.fake.store
        if folder is None:
            with store.lock:
                items = sorted(
                    store.messages[box.id].values(), key=lambda m: m.received, reverse=True
                )
        else:
            items = store.in_folder(box, folder)
        items = [m for m in items if message_filter(call.query.get("$filter"))(m)]
        select = parse_select(call.query.get("$select"))
        top = int_param(call.query.get("$top"), DEFAULT_LIST_PAGE)
        skip = int_param(call.query.get("$skip"), 0)
        page = items[skip : skip + top]
        where = f"mailFolders('{folder.id}')/messages" if folder else "messages"
        out: JSON = {"@odata.context": self.ctx(call, where)}
        if skip + top < len(items):
            query = dict(call.query) | {"$skip": str(skip + top)}
            out["@odata.nextLink"] = (
                f"{self.fake.graph_url}/users/{urllib.parse.quote(call.user_segment)}/{where}?"
                + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
            )
        out["value"] = [message_json(m, select) for m in page]
        return json_reply(200, out)

    # --- delta (message: delta) -------------------------------------------------------------------

    def delta(self, call: Call, folder: Folder) -> Reply:
        box = call.box
        assert box is not None
        store = self.fake.store
        token = call.query.get("$deltatoken") or call.query.get("$skiptoken")
        if token is not None:
            state = store.delta_state(token)
        else:
            change_type = call.query.get("changeType")
            if change_type not in (None, "created", "updated", "deleted"):
                raise GraphError(400, "BadRequest", f"Invalid changeType '{change_type}'.")
            state = DeltaState(
                box.id,
                folder.id,
                parse_select(call.query.get("$select")),
                parse_received_filter(call.query.get("$filter")),
                change_type,
            )
        applied: list[str] = []
        page_size = DEFAULT_DELTA_PAGE
        for pref in prefer_values(call.headers):
            if pref.lower().startswith("odata.maxpagesize="):
                page_size = max(1, int_param(pref.split("=", 1)[1], DEFAULT_DELTA_PAGE))
                applied.append(f"odata.maxpagesize={page_size}")
            if pref.lower().replace(" ", "") == 'idtype="immutableid"':
                applied.append('IdType="ImmutableId"')
        page = store.delta_page(state, page_size)
        base = (
            f"{self.fake.graph_url}/users/{urllib.parse.quote(call.user_segment)}"
            f"/mailFolders('{state.folder_id}')/messages/delta"
        )
        out: JSON = {"@odata.context": f"{self.fake.graph_url}/$metadata#Collection(message)"}
        if page.skip_token:
            out["@odata.nextLink"] = f"{base}?$skiptoken={page.skip_token}"
        else:
            out["@odata.deltaLink"] = f"{base}?$deltatoken={page.delta_token}"
        out["value"] = page.items
        headers = {"Preference-Applied": ", ".join(applied)} if applied else {}
        return json_reply(200, out, headers)

    # --- mail folders (mailFolder resource) -------------------------------------------------------

    def folder_entity(self, call: Call, folder: Folder) -> JSON:
        box = call.box
        assert box is not None
        store = self.fake.store
        with store.lock:
            messages = list(store.messages[box.id].values())
            children = len(store.children(box, folder))
        return {"@odata.context": self.ctx(call, "mailFolders/$entity")} | folder_json(
            folder, messages, children
        )

    def list_folders(self, call: Call, parent: Folder, where: str) -> Reply:
        box = call.box
        assert box is not None
        store = self.fake.store
        folders = store.children(box, parent)
        wanted = call.query.get("$filter")
        if wanted is not None:
            match = re.fullmatch(r"\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*", wanted, re.I)
            if not match:
                raise GraphError(
                    400, "ErrorInvalidUrlQueryFilter", f"The filter '{wanted}' is not supported."
                )
            name = match.group(1).replace("''", "'")
            folders = [f for f in folders if f.display_name == name]
        top = int_param(call.query.get("$top"), DEFAULT_LIST_PAGE)
        skip = int_param(call.query.get("$skip"), 0)
        with store.lock:
            messages = list(store.messages[box.id].values())
            values = [
                folder_json(f, messages, len(store.children(box, f)))
                for f in folders[skip : skip + top]
            ]
        out: JSON = {"@odata.context": self.ctx(call, where)}
        if skip + top < len(folders):
            query = dict(call.query) | {"$skip": str(skip + top)}
            out["@odata.nextLink"] = (
                f"{self.fake.graph_url}/users/{urllib.parse.quote(call.user_segment)}/{where}?"
                + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
            )
        out["value"] = values
        return json_reply(200, out)

    def create_folder(self, call: Call, parent: Folder) -> Reply:
        box = call.box
        assert box is not None
        body = call.obj_body()
        name = body.get("displayName")
        if not isinstance(name, str):
            raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
        folder = self.fake.store.add_folder(box, name, parent.id)
        folder.is_hidden = bool(body.get("isHidden", False))
        return json_reply(201, self.folder_entity(call, folder))

    # --- events (event resource, singleValueLegacyExtendedProperty) -------------------------------

    def event_routes(self, call: Call, event_id: str) -> Reply:
        box = call.box
        assert box is not None
        store = self.fake.store
        self._only(call.method, "GET", "PATCH", "DELETE")
        if call.method == "DELETE":
            store.delete_event(box, event_id)
            return Reply(204)
        if call.method == "PATCH":
            body = call.obj_body()
            event = store.update_event(box, event_id, **event_fields(body))
            return json_reply(
                200, {"@odata.context": self.ctx(call, "events/$entity")} | event_json(event)
            )
        event = store.event(box, event_id)
        out: JSON = {"@odata.context": self.ctx(call, "events/$entity")}
        out |= event_json(event, parse_select(call.query.get("$select"), "event"))
        expand = call.query.get("$expand")
        if expand:
            props = expand_extended(expand, event.extended)
            if props:
                out["singleValueExtendedProperties"] = props
        return json_reply(200, out)

    def create_event(self, call: Call) -> Reply:
        box = call.box
        assert box is not None
        body = call.obj_body()
        fields = event_fields(body)
        if fields.get("start") is None or fields.get("end") is None:
            raise GraphError(
                400, "ErrorPropertyValidationFailure", "At least one property failed validation."
            )
        event = self.fake.store.add_event(
            box,
            fields.pop("subject", None) or "",
            fields.pop("start"),
            fields.pop("end"),
            **fields,
        )
        return json_reply(
            201, {"@odata.context": self.ctx(call, "events/$entity")} | event_json(event)
        )

    def list_events(self, call: Call) -> Reply:
        box = call.box
        assert box is not None
        store = self.fake.store
        with store.lock:
            events = sorted(store.events[box.id].values(), key=lambda e: e.start)
        wanted = call.query.get("$filter")
        if wanted:
            match = re.fullmatch(
                r"\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+"
                r"'((?:[^']|'')*)'\s+and\s+\1/value\s+eq\s+'((?:[^']|'')*)'\s*\)\s*",
                wanted,
                re.I,
            )
            if not match:
                raise GraphError(
                    400, "ErrorInvalidUrlQueryFilter", f"The filter '{wanted}' is not supported."
                )
            key = match.group(2).replace("''", "'").lower()
            value = match.group(3).replace("''", "'")
            events = [e for e in events if e.extended.get(key, ("", None))[1] == value]
        select = parse_select(call.query.get("$select"), "event")
        top = int_param(call.query.get("$top"), DEFAULT_LIST_PAGE)
        return json_reply(
            200,
            {
                "@odata.context": self.ctx(call, "events"),
                "value": [event_json(e, select) for e in events[:top]],
            },
        )

    # --- subscriptions ----------------------------------------------------------------------------

    def subscriptions(self, call: Call, rest: list[str]) -> Reply:
        fake = self.fake
        app = call.token.client_id
        context = f"{fake.graph_url}/$metadata#subscriptions/$entity"
        if not rest:
            self._only(call.method, "GET", "POST")
            if call.method == "GET":
                subs = fake.subs.listing(app)
                return json_reply(
                    200,
                    {
                        "@odata.context": f"{fake.graph_url}/$metadata#subscriptions",
                        "value": [s.to_json() for s in subs],
                    },
                )
            return self.create_subscription(call)
        sub_id = rest[0]
        if len(rest) == 2 and rest[1].lower() == "reauthorize":
            self._only(call.method, "POST")
            fake.subs.reauthorize(sub_id, app)
            return Reply(204)
        if len(rest) != 1:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[1]}'.")
        self._only(call.method, "GET", "PATCH", "DELETE")
        if call.method == "GET":
            return json_reply(200, fake.subs.get(sub_id, app).to_json(context))
        if call.method == "DELETE":
            fake.subs.delete(sub_id, app)
            return Reply(204)
        body = call.obj_body()
        expiry = body.get("expirationDateTime")
        if not isinstance(expiry, str):
            raise GraphError(400, "InvalidRequest", "'expirationDateTime' is required.")
        sub = fake.subs.renew(sub_id, app, expiry)
        return json_reply(200, sub.to_json(context))

    def create_subscription(self, call: Call) -> Reply:
        """Create subscription: validate the body, run the validation handshake(s), then 201."""
        fake = self.fake
        fields = fake.subs.check_body(call.json_body())
        for url in (fields["notification_url"], fields["lifecycle_url"]):
            if url is None:
                continue
            record = fake.notifier.validate(url, fake.validation_timeout)
            fake.record_validation(record)
            if record.ok:
                continue
            if record.status is None:
                reason = "Notification endpoint must respond with 200 OK to validation request."
            elif record.status != 200:
                reason = f"HTTP status code is '{record.status}'."
            elif (record.content_type or "").split(";")[0].strip().lower() != "text/plain":
                reason = "Must respond with 200 OK to this request with text/plain content type."
            else:
                reason = "Response must exactly match validationToken query parameter."
            raise GraphError(
                400, fake.validation_error_code, f"Subscription validation request failed. {reason}"
            )
        immutable = any(
            p.lower().replace(" ", "") == 'idtype="immutableid"'
            for p in prefer_values(call.headers)
        )
        sub = fake.subs.create(
            fields,
            application_id=call.token.client_id,
            creator_id=call.token.principal_id,
            tenant_id=call.token.tenant,
            immutable_ids=immutable,
        )
        return json_reply(201, sub.to_json(f"{fake.graph_url}/$metadata#subscriptions/$entity"))

    # --- JSON batching ----------------------------------------------------------------------------

    def batch(self, call: Call) -> Reply:
        """Combine multiple HTTP requests using JSON batching (concepts/json-batching.md)."""
        body = call.obj_body()
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > MAX_BATCH:
            raise GraphError(
                400,
                "BadRequest",
                "Number of individual requests in a batch request cannot be greater than "
                f"{MAX_BATCH}.",
            )
        seen: set[str] = set()
        for req in requests:
            if not isinstance(req, dict) or not all(k in req for k in ("id", "method", "url")):
                raise GraphError(400, "BadRequest", "Invalid batch payload format.")
            rid = str(req["id"]).lower()
            if rid in seen:
                raise GraphError(
                    400, "BadRequest", f"Batch request id '{req['id']}' is duplicated."
                )
            seen.add(rid)
            headers = {str(k).lower(): str(v) for k, v in (req.get("headers") or {}).items()}
            if "body" in req and "content-type" not in headers:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Write request id : {req['id']} does not contain Content-Type header or body.",
                )
        statuses: dict[str, int] = {}
        responses: list[JSON] = []
        for req in requests:
            rid = str(req["id"])
            depends = [str(d).lower() for d in req.get("dependsOn") or []]
            if any(statuses.get(d, 424) >= 400 for d in depends):
                statuses[rid.lower()] = 424
                responses.append(
                    {
                        "id": rid,
                        "status": 424,
                        "headers": {"Content-Type": "application/json"},
                        "body": {
                            "error": {
                                "code": "FailedDependency",
                                "message": "Request failed due to a failed dependency.",
                            }
                        },
                    }
                )
                continue
            headers = {str(k).lower(): str(v) for k, v in (req.get("headers") or {}).items()}
            raw = req.get("body")
            content = (
                b""
                if raw is None
                else (
                    json.dumps(raw).encode() if isinstance(raw, dict | list) else str(raw).encode()
                )
            )
            url = str(req["url"])
            if url.lower().startswith("http"):
                url = urllib.parse.urlsplit(url).path
            target = "/v1.0/" + re.sub(r"^/?(v1\.0/)?", "", url)
            if target.lower().startswith("/v1.0/$batch"):
                reply = json_reply(
                    400, {"error": {"code": "BadRequest", "message": "Nested batch."}}
                )
            else:
                reply = self.handle(
                    str(req["method"]).upper(),
                    target,
                    headers,
                    content,
                    authorization=call.headers.get("authorization"),
                    in_batch=True,
                )
            statuses[rid.lower()] = reply.status
            item: JSON = {"id": rid, "status": reply.status, "headers": dict(reply.headers)}
            if reply.body:
                if "json" in reply.headers.get("Content-Type", ""):
                    item["body"] = json.loads(reply.body)
                else:
                    item["body"] = base64.b64encode(reply.body).decode()
            responses.append(item)
        return json_reply(200, {"responses": responses})


# --- helpers --------------------------------------------------------------------------------------


def check_if_match(if_match: str | None, etag: str) -> None:
    """A conditional update of an Outlook item: `If-Match` is `*` or a list of the item's
    `@odata.etag`s (W/"<changeKey>"), compared by their changeKey as Exchange compares change
    keys (a tag sent with or without W/ passes). A stale one is refused as Graph refuses it."""
    if if_match is None or if_match.strip() == "*":
        return
    current = etag.removeprefix("W/").strip('"')
    tags = [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]
    if current not in tags:
        raise GraphError(412, "ErrorIrresolvableConflict", IRRESOLVABLE_CONFLICT)


IRRESOLVABLE_CONFLICT = (
    "The send or update operation could not be performed because the change key passed in the "
    "request does not match the current change key for the item."
)


def int_param(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        return max(0, int(value))
    except ValueError as exc:
        raise GraphError(400, "BadRequest", f"Invalid integer value '{value}'.") from exc


def parse_received_filter(value: str | None) -> tuple[str, Any] | None:
    """The only delta filters Outlook supports: receivedDateTime ge|gt {value}."""
    if not value:
        return None
    match = re.fullmatch(r"\s*receivedDateTime\s+(ge|gt)\s+'?([^'\s]+)'?\s*", value, re.I)
    if not match:
        raise GraphError(
            400, "ErrorInvalidUrlQueryFilter", f"The filter '{value}' is not supported."
        )
    try:
        return match.group(1).lower(), parse_datetime(match.group(2))
    except ValueError as exc:
        raise GraphError(400, "BadRequest", f"Invalid date '{match.group(2)}'.") from exc


def message_filter(value: str | None) -> Callable[[Message], bool]:
    """$filter on message lists: receivedDateTime ge|gt, internetMessageId eq, isRead eq."""
    if not value:
        return lambda _m: True
    match = re.fullmatch(r"\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*", value, re.I)
    if match:
        wanted = match.group(1).replace("''", "'")
        return lambda m: m.parsed.internet_message_id == wanted
    match = re.fullmatch(r"\s*isRead\s+eq\s+(true|false)\s*", value, re.I)
    if match:
        flag = match.group(1).lower() == "true"
        return lambda m: m.is_read == flag
    received = parse_received_filter(value)
    assert received is not None
    op, when = received
    return lambda m: m.received >= when if op == "ge" else m.received > when


def flag_from_json(value: Any, now: Any) -> Flag:
    """followupFlag: flagStatus + start/due/completed dateTimeTimeZone (due needs start)."""
    if not isinstance(value, dict):
        raise GraphError(400, "BadRequest", "flag must be an object.")
    status = value.get("flagStatus", "flagged")
    if status not in FLAG_STATUSES:
        raise GraphError(400, "BadRequest", f"Invalid flagStatus '{status}'.")
    start = parse_dttz(value.get("startDateTime"))
    due = parse_dttz(value.get("dueDateTime"))
    completed = parse_dttz(value.get("completedDateTime"))
    return make_flag(status, start, due, completed, now)


def make_flag(status: str, start: Any, due: Any, completed: Any, now: Any) -> Flag:
    if status not in FLAG_STATUSES:
        raise GraphError(400, "BadRequest", f"Invalid flagStatus '{status}'.")
    if due is not None and start is None:
        raise GraphError(
            400, "ErrorInvalidArgument", "To set the due date, you must also specify startDateTime."
        )
    if status == "notFlagged":
        return Flag()
    if status == "complete":
        return Flag(status, start, due, completed or now)
    return Flag(status, start, due, None)


def event_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "subject" in body:
        fields["subject"] = str(body["subject"] or "")
    if "start" in body:
        fields["start"] = parse_dttz(body["start"])
    if "end" in body:
        fields["end"] = parse_dttz(body["end"])
    if isinstance(body.get("body"), dict):
        fields["body"] = body["body"]
    if isinstance(body.get("location"), dict):
        fields["location"] = str(body["location"].get("displayName", ""))
    if isinstance(body.get("categories"), list):
        fields["categories"] = [str(c) for c in body["categories"]]
    if "showAs" in body:
        fields["show_as"] = str(body["showAs"])
    props = body.get("singleValueExtendedProperties")
    if props is not None:
        if not isinstance(props, list) or not all(
            isinstance(p, dict) and isinstance(p.get("id"), str) and "value" in p for p in props
        ):
            raise GraphError(
                400, "BadRequest", "singleValueExtendedProperties must be a list of {id, value}."
            )
        fields["extended_properties"] = {p["id"]: str(p["value"]) for p in props}
    return fields


def expand_extended(expand: str, extended: dict[str, tuple[str, str]]) -> list[JSON]:
    """$expand=singleValueExtendedProperties($filter=id eq '...')."""
    match = re.fullmatch(
        r"\s*singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*id\s+eq\s+'((?:[^']|'')*)'\s*\))?\s*",
        expand,
        re.I,
    )
    if not match:
        raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: '{expand}'.")
    if match.group(1) is None:
        return [{"id": k, "value": v} for k, v in extended.values()]
    wanted = match.group(1).replace("''", "'").lower()
    found = extended.get(wanted)
    return [{"id": found[0], "value": found[1]}] if found else []
