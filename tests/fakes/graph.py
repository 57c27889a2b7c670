"""A fake Microsoft Graph (mail, calendar, change notifications) and Entra ID token service.

It speaks the documented wire format over real HTTPS on 127.0.0.1 (a self-signed CA, see
:mod:`tests.fakes.tls`), so the app's own httpx/msal/azure-identity code runs unmodified::

    with FakeGraph() as fake:
        fake.add_app("contoso", "app-id", "secret")
        fake.add_user("ann@contoso.com")
        fake.add_message("ann@contoso.com", "inbox", b"Subject: hi\\r\\n\\r\\nbody")
        app = msal.ConfidentialClientApplication(
            "app-id", client_credential="secret", authority=f"{fake.login_url}/contoso",
            instance_discovery=False, verify=fake.ca_file)

Which Microsoft page each shape follows is written in the module doing it: graph_auth (token
service, managed identity), graph_model (message, mailFolder, event, errors), graph_store (delta),
graph_subscriptions (subscriptions, change and lifecycle notifications), graph_notify (validation
handshake, delivery), graph_routes (REST endpoints, JSON batching), graph_faults (throttling).
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

from tests.fakes.graph_auth import DEVICE_CODE, TokenService
from tests.fakes.graph_faults import ConcurrencyTracker, Faults, RequestRecord
from tests.fakes.graph_model import JSON, ROOT, GraphError, Mailbox, event_json, message_json
from tests.fakes.graph_notify import (
    GRAPH_TIMEOUT,
    VALIDATION_TIMEOUT,
    DeliveryReport,
    Notifier,
    PostRecord,
    ValidationRecord,
    deliver,
)
from tests.fakes.graph_routes import GraphApi, flag_from_json, json_reply, make_flag
from tests.fakes.graph_store import Change, Clock, MailStore
from tests.fakes.graph_subscriptions import Subscription, SubscriptionRegistry
from tests.fakes.harness import HttpServer, Reply, RequestLog, ServerTls, Serving
from tests.fakes.tls import TlsFiles

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


class FakeGraph(Serving):
    """Fake Graph + Entra ID on https://127.0.0.1:PORT, managed identity on http://127.0.0.1:PORT2.

    Attributes tests tune: ``concurrency_limit`` (None = only track; 4 = Outlook's limit),
    ``concurrency_retry_after``, ``validation_timeout`` (10 s), ``faults``, ``token_lifetime``,
    ``subs.echoes`` (``updated`` notifications per change of a message, default 2).
    """

    def __init__(
        self,
        *,
        concurrency_limit: int | None = None,
        seed: int | None = None,
        notification_verify: bool | str = False,
        require_https_notification_url: bool = False,
        tls: TlsFiles | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.clock = Clock()
        self.tokens = TokenService(self._lock, self.clock)
        self.store = MailStore(self._lock, self.clock, self._on_change)
        self.subs = SubscriptionRegistry(
            self._lock, self.clock, self.store, require_https=require_https_notification_url
        )
        self.faults = Faults(seed)
        self.tracker = ConcurrencyTracker()
        self.concurrency_limit = concurrency_limit
        self.sent_mail: list[tuple[str, bytes]] = []  # (mailbox, MIME) posted to sendMail
        # (mailbox id, message id) -> (edit of its categories, PATCHes it still precedes)
        self._user_edits: dict[tuple[str, str], tuple[Callable[[list[str]], list[str]], int]] = {}
        self.imap_grants: dict[str, str] = {}
        self.concurrency_retry_after = 1
        self.validation_timeout = VALIDATION_TIMEOUT
        # Graph answers a failed handshake with 400 and this code (observed: "InvalidRequest").
        self.validation_error_code = "InvalidRequest"
        self._verify = notification_verify
        self.notifier = Notifier(notification_verify)
        self.api = GraphApi(self)
        self._tls_files = tls
        self.tls: ServerTls | None = None
        self._requests = RequestLog[RequestRecord]()
        self._validations = RequestLog[ValidationRecord]()
        self._posts = RequestLog[PostRecord]()
        self._https: HttpServer | None = None
        self._http: HttpServer | None = None
        self.base_url = ""
        self.graph_url = ""
        self.login_url = ""
        self.msi_endpoint = ""
        self.ca_file = ""
        self.ca_bundle = ""

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._https is not None:
            return self
        self.tls = ServerTls.of(self._tls_files)
        self.ca_file, self.ca_bundle = self.tls.ca_file, self.tls.ca_bundle
        self._https = HttpServer(self._serve_https, self.tls)
        self._http = HttpServer(self._serve_msi)
        self._https.start()
        self._http.start()
        self.base_url = self._https.base_url
        self.graph_url = f"{self.base_url}/v1.0"
        self.login_url = self.base_url
        self.tokens.base_url = self.base_url
        self.msi_endpoint = f"{self._http.base_url}/msi/token"
        return self

    def stop(self) -> None:
        for listener in (self._https, self._http):
            if listener is not None:
                listener.stop()
        self._https = self._http = None
        self.notifier.close()
        self.notifier = Notifier(self._verify)

    @property
    def server_errors(self) -> list[Exception]:
        """Exceptions raised inside the fake while answering (should stay empty)."""
        return [e for s in (self._https, self._http) if s is not None for e in s.errors]

    # --- identity ---------------------------------------------------------------------------------

    def add_app(self, tenant: str, client_id: str, secret: str | None = None) -> None:
        """Register an app. Client assertions (certificate auth) are accepted for every app."""
        self.tokens.add_app(tenant, client_id, secret)

    def issue_token(self, tenant: str, client_id: str) -> str:
        """A Graph access token for a registered app, without going through /token."""
        with self._lock:
            app = self.tokens.apps[(tenant.lower(), client_id.lower())]
        return self.tokens._issue(
            app.tenant, app.client_id, app.object_id, "https://graph.microsoft.com", "app"
        ).value

    def expire_tokens(self) -> None:
        """Every access token issued so far is now expired (401 InvalidAuthenticationToken)."""
        self.tokens.expire_tokens()

    @property
    def token_lifetime(self) -> int:
        return self.tokens.lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        self.tokens.lifetime = seconds

    @property
    def identity_header(self) -> str:
        return self.tokens.msi_header

    @property
    def msi_tenant(self) -> str:
        return self.tokens.msi_tenant

    def msi_env(self) -> dict[str, str]:
        """IDENTITY_ENDPOINT / IDENTITY_HEADER as App Service and Functions set them."""
        return {"IDENTITY_ENDPOINT": self.msi_endpoint, "IDENTITY_HEADER": self.identity_header}

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the fake (httpx 0.28 prefers it to ``verify=<path>``)."""
        assert self.tls is not None, "start() first"
        return self.tls.client_context()

    def ca_env(self) -> dict[str, str]:
        """Environment that makes the code under test trust the fake (see ServerTls.env); set
        it (e.g. with monkeypatch.setenv) when that code builds its own clients."""
        assert self.tls is not None, "start() first"
        return self.tls.env()

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (tokens and subscriptions expire by it)."""
        self.clock.advance(seconds)

    # --- mailbox data -----------------------------------------------------------------------------

    def add_user(
        self,
        user: str,
        *,
        tenant: str | None = None,
        display_name: str | None = None,
        user_id: str | None = None,
    ) -> str:
        """Add a mailbox addressed by ``user`` (UPN or id); returns its object id (a GUID).
        With ``tenant`` only tokens of that tenant may touch it (else 403 ErrorAccessDenied)."""
        return self.store.add_user(
            user, user_id=user_id, display_name=display_name, tenant=tenant
        ).id

    def user_id(self, user: str) -> str:
        return self.store.mailbox(user).id

    def folder_id(self, user: str, folder: str) -> str:
        """The opaque id of a well-known folder name (inbox, archive, ...) or folder id."""
        return self.store.folder(self.store.mailbox(user), folder).id

    def folders(self, user: str) -> list[JSON]:
        """Every folder of the mailbox: id, displayName, parentFolderId, wellKnownName."""
        box = self.store.mailbox(user)
        with self.store.lock:
            return [
                {
                    "id": f.id,
                    "displayName": f.display_name,
                    "parentFolderId": f.parent_id,
                    "wellKnownName": f.well_known,
                }
                for f in self.store.folders[box.id].values()
            ]

    def add_folder(self, user: str, display_name: str, parent: str = ROOT) -> str:
        return self.store.add_folder(self.store.mailbox(user), display_name, parent).id

    def add_message(
        self,
        user: str,
        folder: str,
        mime: bytes,
        *,
        flag: str | Mapping[str, Any] | None = None,
        is_read: bool = False,
        categories: Iterable[str] = (),
        received: dt.datetime | None = None,
    ) -> str:
        """Deliver a message (fires ``created``); ``flag``: a flagStatus or a followupFlag dict."""
        box = self.store.mailbox(user)
        made = None
        if isinstance(flag, str):
            made = make_flag(flag, None, None, None, self.clock.now())
        elif flag is not None:
            made = flag_from_json(dict(flag), self.clock.now())
        msg = self.store.add_message(
            box, folder, mime, flag=made, is_read=is_read, categories=categories, received=received
        )
        return msg.id

    def move_message(self, user: str, message_id: str, folder: str) -> None:
        self.store.move_message(self.store.mailbox(user), message_id, folder)

    def set_flag(
        self,
        user: str,
        message_id: str,
        flag_status: str,
        start: dt.datetime | None = None,
        due: dt.datetime | None = None,
    ) -> None:
        flag = make_flag(flag_status, start, due, None, self.clock.now())
        self.store.update_message(self.store.mailbox(user), message_id, flag=flag)

    def update_message(
        self,
        user: str,
        message_id: str,
        *,
        is_read: bool | None = None,
        categories: Iterable[str] | None = None,
        importance: str | None = None,
        subject: str | None = None,
    ) -> None:
        self.store.update_message(
            self.store.mailbox(user),
            message_id,
            is_read=is_read,
            categories=categories,
            importance=importance,
            subject=subject,
        )

    def edit_before_patch(
        self,
        user: str,
        message_id: str,
        edit: Callable[[list[str]], list[str]],
        *,
        times: int = 1,
    ) -> None:
        """As the user (or a rule, or another app): the next ``times`` PATCHes of the message
        find it just changed, its categories made ``edit(categories)`` (a new changeKey),
        after the caller read it and before the PATCH applies: the race made certain."""
        box = self.store.mailbox(user)
        with self._lock:
            self._user_edits[(box.id, message_id)] = (edit, times)

    def run_user_edits(self, box: Mailbox, message_id: str) -> None:
        """Called by a message PATCH (under the store lock) before it is checked and applied."""
        with self._lock:
            edit, times = self._user_edits.get((box.id, message_id), (None, 0))
            if edit is None or times <= 0:
                return
            self._user_edits[(box.id, message_id)] = (edit, times - 1)
            categories = list(self.store.message(box, message_id).categories)
            self.store.update_message(box, message_id, categories=edit(categories))

    def delete_message(self, user: str, message_id: str, *, permanent: bool = False) -> None:
        """As DELETE: to Deleted Items first; from there (or ``permanent``) gone for good."""
        self.store.delete_message(self.store.mailbox(user), message_id, permanent=permanent)

    def message(self, user: str, message_id: str) -> JSON:
        """The message resource as GET would return it (without @odata.context)."""
        return message_json(self.store.message(self.store.mailbox(user), message_id))

    def messages(self, user: str, folder: str | None = None) -> list[JSON]:
        box = self.store.mailbox(user)
        if folder is None:
            with self._lock:
                return [message_json(m) for m in self.store.messages[box.id].values()]
        return [message_json(m) for m in self.store.in_folder(box, self.store.folder(box, folder))]

    def add_event(
        self,
        user: str,
        subject: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        extended_properties: Mapping[str, str] | None = None,
        location: str = "",
        body: str = "",
    ) -> str:
        event = self.store.add_event(
            self.store.mailbox(user),
            subject,
            start,
            end,
            extended_properties=extended_properties,
            location=location,
            body={"contentType": "html", "content": body},
        )
        return event.id

    def move_event(self, user: str, event_id: str, start: dt.datetime, end: dt.datetime) -> None:
        self.store.update_event(self.store.mailbox(user), event_id, start=start, end=end)

    def update_event(
        self,
        user: str,
        event_id: str,
        *,
        subject: str | None = None,
        extended_properties: Mapping[str, str] | None = None,
    ) -> None:
        self.store.update_event(
            self.store.mailbox(user),
            event_id,
            subject=subject,
            extended_properties=extended_properties,
        )

    def delete_event(self, user: str, event_id: str) -> None:
        self.store.delete_event(self.store.mailbox(user), event_id)

    def event(self, user: str, event_id: str) -> JSON:
        """The event resource with all its singleValueExtendedProperties."""
        event = self.store.event(self.store.mailbox(user), event_id)
        out = event_json(event)
        out["singleValueExtendedProperties"] = [
            {"id": k, "value": v} for k, v in event.extended.values()
        ]
        return out

    def events(self, user: str) -> list[JSON]:
        box = self.store.mailbox(user)
        with self._lock:
            ids = list(self.store.events[box.id])
        return [self.event(user, i) for i in ids]

    def expire_delta_tokens(self) -> int:
        """Forget every delta/skip token: the next use answers 410 syncStateNotFound."""
        return self.store.expire_delta_tokens()

    # --- subscriptions and notifications ----------------------------------------------------------

    def _on_change(self, changes: list[Change]) -> None:
        self.subs.on_change(changes)

    @property
    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self.subs._live())

    def subscription(self, subscription_id: str) -> Subscription:
        return self.subs.get(subscription_id)

    def remove_subscription(self, subscription_id: str) -> None:
        """Graph dropped it silently: no notification; PATCH/GET now answer 404."""
        self.subs.delete(subscription_id)

    @property
    def outbox(self) -> list[JSON]:
        """Change notifications waiting for :meth:`deliver`."""
        with self._lock:
            return [p.notification for p in self.subs.outbox]

    def drop_outbox(self, *, send_missed: bool = False) -> int:
        """Discard pending notifications (Graph lost them); optionally tell each affected
        subscription with a lifecycle URL through a ``missed`` lifecycle notification."""
        taken = self.subs.take_outbox()
        if send_missed:
            for sub_id in dict.fromkeys(p.subscription_id for p in taken):
                sub = self.subs.get(sub_id)
                if sub.lifecycle_url:
                    self.send_lifecycle(sub_id, "missed")
        return len(taken)

    def deliver(
        self,
        batch_size: int = 10,
        duplicate_rate: float = 0.0,
        shuffle: bool = False,
        drop_rate: float = 0.0,
        concurrency: int = 1,
        seed: int | None = None,
        *,
        attempts: int = 3,
        timeout: float = GRAPH_TIMEOUT,
        requeue_failed: bool = True,
    ) -> DeliveryReport:
        """POST pending notifications as {"value": [...]} to their notificationUrl.

        Up to ``batch_size`` per POST (same URL), ``attempts`` tries on 5xx/429/timeouts;
        notifications still failing go back to the outbox (Graph keeps retrying for 4 h) unless
        ``requeue_failed`` is False."""
        items = self.subs.take_outbox()
        report, again = deliver(
            self.notifier,
            items,
            batch_size=batch_size,
            duplicate_rate=duplicate_rate,
            shuffle=shuffle,
            drop_rate=drop_rate,
            concurrency=concurrency,
            seed=seed,
            attempts=attempts,
            timeout=timeout,
        )
        if requeue_failed and again:
            self.subs.requeue(again)
        else:
            report.requeued = 0
        self._posts.extend(report.posts)
        return report

    def send_lifecycle(self, subscription_id: str, event: str) -> PostRecord:
        """POST a lifecycle notification now to the subscription's lifecycleNotificationUrl.
        ``subscriptionRemoved`` also removes the subscription; ``reauthorizationRequired``
        marks it until it is reauthorized or renewed."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"lifecycle event must be one of {LIFECYCLE_EVENTS}")
        sub = self.subs.get(subscription_id)
        if not sub.lifecycle_url:
            raise ValueError("the subscription has no lifecycleNotificationUrl")
        body = {"value": [SubscriptionRegistry.lifecycle(sub, event)]}
        if event == "subscriptionRemoved":
            self.subs.delete(sub.id)
        elif event == "reauthorizationRequired":
            with self._lock:
                sub.reauthorization_required = True
        records = self.notifier.post(sub.lifecycle_url, body, attempts=3, count=1)
        self._posts.extend(records)
        return records[-1]

    def forge(self, url: str, body: Any, *, timeout: float = GRAPH_TIMEOUT) -> PostRecord:
        """POST an arbitrary body (dict/list as JSON, bytes as is) to ``url`` once."""
        record = self.notifier.post(url, body, timeout=timeout, attempts=1)[0]
        self._posts.add(record)
        return record

    def record_validation(self, record: ValidationRecord) -> None:
        self._validations.add(record)

    @property
    def validations(self) -> list[ValidationRecord]:
        return self._validations.all()

    @property
    def posts(self) -> list[PostRecord]:
        """Every notification POST made so far (deliveries, lifecycle, forged)."""
        return self._posts.all()

    # --- request log and limits -------------------------------------------------------------------

    def log(self, record: RequestRecord) -> None:
        self._requests.add(record)

    @property
    def requests(self) -> list[RequestRecord]:
        return self._requests.all()

    def count(
        self,
        path: str | None = None,
        *,
        method: str | None = None,
        status: int | None = None,
        in_batch: bool | None = None,
    ) -> int:
        """How many logged requests match (``path`` is a regex searched in the decoded path)."""
        return sum(
            1
            for r in self.requests
            if (path is None or re.search(path, r.path))
            and (method is None or r.method == method.upper())
            and (status is None or r.status == status)
            and (in_batch is None or r.in_batch == in_batch)
        )

    def clear_requests(self) -> None:
        self._requests.clear()
        self.tracker.reset()

    @property
    def max_concurrency(self) -> dict[str, int]:
        """Peak in-flight requests seen per mailbox (keyed as given to add_user)."""
        return self.tracker.snapshot()

    # --- HTTP entry points ------------------------------------------------------------------------

    def _serve_https(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        path = target.split("?", 1)[0]
        if path == "/v1.0" or path.startswith("/v1.0/"):
            return self.api.handle(method, target, headers, body)
        if path == "/msi/token":
            return self._serve_msi(method, target, headers, body)
        started, clock = time.time(), time.perf_counter()
        tenant = None
        reply: Reply
        delay, fault = self.faults.pick(method, path)
        time.sleep(delay)
        if fault is not None and fault.status is not None:
            extra = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            reply = json_reply(fault.status, {"error": "temporarily_unavailable"}, extra)
        elif match := re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", path):
            tenant = urllib.parse.unquote(match.group(1))
            reply = json_reply(*self.tokens.openid_configuration(tenant))
        elif (match := re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", path)) and method == "POST":
            tenant = urllib.parse.unquote(match.group(1))
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            if form.get("grant_type") in (DEVICE_CODE, "refresh_token"):
                reply = json_reply(*self.tokens.delegated(tenant, form))
            else:
                reply = json_reply(*self.tokens.client_credentials(tenant, form))
        elif (
            match := re.fullmatch(r"/([^/]+)/oauth2/v2\.0/devicecode", path)
        ) and method == "POST":
            tenant = urllib.parse.unquote(match.group(1))
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            reply = json_reply(*self.tokens.device_code(tenant, form))
        else:
            reply = json_reply(404, {"error": {"code": "NotFound", "message": f"No route {path}"}})
        reply.headers["Cache-Control"] = "no-store, no-cache"
        return self._logged(method, target, tenant, reply, started, clock)

    def grant_imap(self, client_id: str, user: str) -> None:
        """Let app `client_id`'s tokens open `user`'s mailbox over IMAP (what an Exchange
        service principal with mailbox permission is to Exchange Online)."""
        self.imap_grants[client_id] = user

    def _introspect(self, value: str) -> JSON:
        with self.tokens.lock:
            token = self.tokens.tokens.get(value)
        if token is None or token.expires_at <= self.clock.now().timestamp():
            return {"active": "false"}
        if token.kind == "user":  # delegated: the signed-in user's own mailbox
            return {"active": "true", "client_id": token.client_id, "username": token.principal_id}
        return {
            "active": "true",
            "client_id": token.client_id,
            "aud": token.audience,
            "username": self.imap_grants.get(token.client_id, ""),
        }

    def _serve_msi(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        path, _, raw_query = target.partition("?")
        started, clock = time.time(), time.perf_counter()
        if path == "/introspect" and method == "GET":
            # RFC 7662-style introspection, what Dovecot's oauth2 passdb asks (IMAP XOAUTH2).
            query = {k: v[0] for k, v in urllib.parse.parse_qs(raw_query).items()}
            reply = json_reply(200, self._introspect(query.get("token", "")))
        elif path != "/msi/token" or method != "GET":
            reply = json_reply(404, {"statusCode": 404, "message": "Not found"})
        else:
            query = {k: v[0] for k, v in urllib.parse.parse_qs(raw_query).items()}
            reply = json_reply(*self.tokens.managed_identity(query, headers))
        return self._logged(method, target, self.msi_tenant, reply, started, clock)

    def _logged(
        self,
        method: str,
        target: str,
        tenant: str | None,
        reply: Reply,
        started: float,
        clock: float,
    ) -> Reply:
        """Log a request to the identity endpoints (no mailbox, no app, never in a batch)."""
        path, _, query = target.partition("?")
        elapsed = time.perf_counter() - clock
        record = RequestRecord(
            method, path, query, reply.status, None, tenant, None, False, None, started, elapsed
        )
        self.log(record)
        return reply


__all__ = ["DeliveryReport", "FakeGraph", "GraphError", "PostRecord", "ValidationRecord"]
