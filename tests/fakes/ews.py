"""A fake Exchange Web Services (EWS) server: SOAP over real HTTP(S) on 127.0.0.1.

It pretends to be Exchange 2016 (``ServerVersionInfo`` 15.1) and answers what an EWS client sends
while polling mailboxes, so unmodified exchangelib runs against it::

    with FakeEws() as ews:
        ews.add_user("ann@contoso.com", "secret")
        item_id = ews.add_message("ann@contoso.com", "inbox", b"Subject: hi\\r\\n\\r\\nbody")
        config = Configuration(
            service_endpoint=ews.url, credentials=Credentials("ann@contoso.com", "secret"),
            auth_type=BASIC, version=Version(build=Build(15, 1)))
        account = Account("ann@contoso.com", config=config, access_type=DELEGATE)

Operations: GetFolder, FindFolder, CreateFolder, SyncFolderItems, GetItem, FindItem, UpdateItem,
MoveItem, DeleteItem, CreateItem (email messages), ResolveNames, ConvertId (see
:mod:`tests.fakes.ews_ops`); mailbox state and sync states live in :mod:`tests.fakes.ews_store`,
sending in :mod:`tests.fakes.ews_send`, SOAP envelopes and faults in :mod:`tests.fakes.ews_xml`.

Sending (CreateItem with ``SendOnly``/``SendAndSaveCopy``) delivers nothing: every sent message is
recorded in :attr:`FakeEws.sent` as a :class:`SentMail`, and with ``SendAndSaveCopy`` a read copy is
saved to ``SavedItemFolderId`` (Sent Items by default), where sync sees it as a Create. Sending
from another mailbox needs access to it as reading does (the fake has no separate SendAs right).

Authentication is HTTP Basic against :meth:`FakeEws.add_user` (401 otherwise, with
``WWW-Authenticate: Basic``, which is also what a client probing the auth type sees),
``Authorization: Bearer`` accepted by ``check_bearer`` (an app token: it may impersonate anyone,
as an app with full_access_as_app may) or, with ``auth_schemes`` naming ``"ntlm"``, NTLM as
on-premises Exchange does it: ``add_user(..., ntlm="CONTOSO\\ann")`` or
:meth:`FakeEws.add_ntlm_user` map an NTLM account to a mailbox, and the three-leg handshake
authenticates the keep-alive connection (see :mod:`tests.fakes.ews_ntlm`; pyspnego is the
acceptor, which makes the fake set ``NTLM_USER_FILE`` while it runs)::

    with FakeEws(auth_schemes=("basic", "ntlm")) as ews:
        ews.add_user("ann@contoso.com", "secret", ntlm="CONTOSO\\ann")
        config = Configuration(
            service_endpoint=ews.url, credentials=Credentials("CONTOSO\\ann", "secret"),
            auth_type=NTLM, version=Version(build=Build(15, 1)))

The acting user of an NTLM request is the mapped mailbox. ``ExchangeImpersonation`` needs a user
added with ``impersonation=True`` (else the ErrorImpersonateUserDenied fault). Without
impersonation a user may open their own mailbox and those granted with
:meth:`FakeEws.grant_access` (else ErrorAccessDenied).
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

from tests.fakes.ews_ntlm import ConnectionListener, NtlmAcceptor
from tests.fakes.ews_ops import Caller, Operations, SyncCall
from tests.fakes.ews_send import SentMail
from tests.fakes.ews_store import (
    EwsStore,
    ExtValue,
    Flag,
    FlagStatus,
    Folder,
    Item,
    ItemState,
    aware,
)
from tests.fakes.ews_xml import (
    API_VERSIONS,
    MNS,
    SOAP,
    TNS,
    EwsError,
    PropKey,
    SoapFault,
    child,
    el,
    envelope,
    error_message,
    fault,
    local,
    text_of,
)
from tests.fakes.harness import FaultPlan, OneServer, Reply, RequestLog, ServerTls
from tests.fakes.tls import TlsFiles

PATH = "/ews/exchange.asmx"
XML_TYPE = "text/xml; charset=utf-8"
AUTH_SCHEMES = ("basic", "ntlm")  # what ``auth_schemes`` may name (Bearer: ``check_bearer``)

# The request element holding one id per response message, to answer fail_next() per unit.
_UNITS = {
    "GetItem": "ItemIds",
    "MoveItem": "ItemIds",
    "DeleteItem": "ItemIds",
    "UpdateItem": "ItemChanges",
    "GetFolder": "FolderIds",
    "FindFolder": "ParentFolderIds",
    "FindItem": "ParentFolderIds",
    "CreateFolder": "Folders",
    "ConvertId": "SourceIds",
    "CreateItem": "Items",
}


@dataclass(frozen=True)
class EwsRequest:
    """One SOAP request as the fake saw it."""

    operation: str
    user: str | None  # the Basic user or the NTLM account's mailbox; None for a bearer token
    impersonated: str | None  # ExchangeImpersonation/ConnectingSID
    mailboxes: tuple[str, ...]  # the mailboxes it acted for
    anchor: str | None  # X-AnchorMailbox
    api_version: str | None  # RequestServerVersion
    status: int
    ntlm_user: str | None = None  # the NTLM account as the client sent it (CONTOSO\ann)
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)


@dataclass(frozen=True)
class _Who:
    """Who sent an authenticated request."""

    user: str | None  # a mailbox address; None for a bearer token
    bearer: bool = False
    ntlm_user: str | None = None


@dataclass(frozen=True)
class _Fault:
    operation: str | None
    code: str
    as_fault: bool
    text: str | None = None
    back_off_ms: int | None = None


class FakeEws(OneServer[ConnectionListener]):
    """Fake EWS at :attr:`url` (``http(s)://127.0.0.1:PORT/EWS/Exchange.asmx``).

    ``tls=True`` (or a :class:`TlsFiles`) serves HTTPS with the fake CA (see :meth:`ca_env`).
    IsRead-only changes reach SyncFolderItems as ``Update``; with ``read_flag_changes=True`` as
    ``ReadFlagChange`` (ItemId + IsRead), which the reference documents for an item that "has been
    read" ("ReadFlagChange").

    Records: :attr:`calls` (authenticated SOAP requests per operation), :attr:`requests`
    (:class:`EwsRequest` each), :attr:`unauthorized` (401 answers, including a client's
    auth-type probe and the CHALLENGE leg of each NTLM handshake), :attr:`ntlm_challenges` (NTLM
    handshakes started: one per connection while the connection is kept alive),
    :attr:`sync_calls`, :attr:`get_item_counts`, :attr:`sent` (every message sent through
    CreateItem, as a :class:`SentMail`, in order).

    ``auth_schemes`` is what the server accepts and its 401 offers (``WWW-Authenticate: NTLM,
    Basic realm=...``, plus ``Bearer`` with ``check_bearer``): ``"basic"`` and/or ``"ntlm"``.
    """

    def __init__(
        self,
        *,
        tls: bool | TlsFiles = False,
        check_bearer: Callable[[str], bool] | None = None,
        read_flag_changes: bool = False,
        auth_schemes: Sequence[str] = ("basic",),
    ) -> None:
        unknown = set(auth_schemes) - set(AUTH_SCHEMES)
        if unknown:
            raise ValueError(f"auth_schemes: unknown {sorted(unknown)}, known {AUTH_SCHEMES}")
        if not auth_schemes and check_bearer is None:
            raise ValueError("no way to sign in: give auth_schemes or check_bearer")
        self.auth_schemes = tuple(auth_schemes)
        self.ntlm = NtlmAcceptor()
        self._lock = threading.RLock()
        self.store = EwsStore(self._lock)
        self.store.read_flag_changes = read_flag_changes
        self.ops = Operations(self.store)
        self.sent: list[SentMail] = self.ops.sent  # appended to under the lock
        self.check_bearer = check_bearer
        self.calls: collections.Counter[str] = collections.Counter()
        self._requests = RequestLog[EwsRequest]()
        self.unauthorized = 0
        self._faults = FaultPlan[_Fault]()
        self._before = FaultPlan[tuple[str, Callable[[], None]]]()
        self._tls = tls
        self.tls: ServerTls | None = None
        self.url = ""
        self.ca_file = ""
        self.ca_bundle = ""

    # --- lifecycle --------------------------------------------------------------------------------

    def make_server(self) -> ConnectionListener:
        if self._tls:
            self.tls = ServerTls.of(self._tls if isinstance(self._tls, TlsFiles) else None)
            self.ca_file, self.ca_bundle = self.tls.ca_file, self.tls.ca_bundle
        if "ntlm" in self.auth_schemes:
            self.ntlm.start()  # NTLM_USER_FILE for pyspnego's acceptor
        return ConnectionListener(self._serve, self.tls, self.ntlm.reset_connection)

    def start(self) -> Self:
        super().start()
        self.url = f"{self.running.base_url}/EWS/Exchange.asmx"
        return self

    def stop(self) -> None:
        super().stop()
        self.ntlm.close()

    @property
    def server_errors(self) -> list[Exception]:
        """Exceptions raised inside the fake while answering (should stay empty)."""
        return [] if self.server is None else list(self.server.errors)

    def ca_env(self) -> dict[str, str]:
        """With ``tls``: the environment that makes requests (and so exchangelib, which has no
        ``verify`` option) trust the fake (see ServerTls.env)."""
        assert self.tls is not None, "FakeEws(tls=...) and start() first"
        return self.tls.env()

    @property
    def requests(self) -> list[EwsRequest]:
        """Every authenticated SOAP request, in order."""
        return self._requests.all()

    # --- users and folders ------------------------------------------------------------------------

    def add_user(
        self,
        smtp_address: str,
        password: str | None = None,
        *,
        display_name: str | None = None,
        impersonation: bool = False,
        ntlm: str | None = None,
    ) -> None:
        """A mailbox with the well-known folders; ``password`` lets it sign in with Basic auth,
        and with ``ntlm`` (``DOMAIN\\user`` or ``user@domain``) also as that NTLM account
        (:meth:`add_ntlm_user`); ``impersonation`` lets it act for any mailbox through
        ExchangeImpersonation."""
        if ntlm is not None and password is None:
            raise ValueError("an NTLM account needs a password")
        if ntlm is not None and "ntlm" not in self.auth_schemes:
            raise ValueError('NTLM accounts need FakeEws(auth_schemes=(..., "ntlm"))')
        if ntlm is not None and password is not None:
            self.ntlm.check(ntlm, password)
        self.store.add_user(smtp_address, password, display_name, impersonation)
        if ntlm is not None and password is not None:
            self.add_ntlm_user(smtp_address, ntlm, password)

    def add_ntlm_user(self, smtp_address: str, name: str, password: str) -> None:
        """Let the NTLM account ``name`` (``DOMAIN\\user`` or ``user@domain``, matched
        case-insensitively as the client sends it) sign in with ``password`` and act as the
        mailbox ``smtp_address`` (added before). Needs ``"ntlm"`` in ``auth_schemes``."""
        if "ntlm" not in self.auth_schemes:
            raise ValueError('NTLM accounts need FakeEws(auth_schemes=(..., "ntlm"))')
        with self._lock:
            box = self.store.mailbox(smtp_address)
            self.ntlm.add(name, password, box.address)

    def grant_access(self, mailbox: str, user: str) -> None:
        """Give ``user`` full access to ``mailbox`` (delegate access without impersonation)."""
        with self._lock:
            self.store.mailbox(mailbox).delegates.add(user.lower())

    def add_folder(self, user: str, name: str, parent: str = "msgfolderroot") -> str:
        """A mail folder under ``parent`` (distinguished id, folder id or path); its id."""
        with self._lock:
            box = self.store.mailbox(user)
            return self.store.add_folder(box, name, self._folder(user, parent), "IPF.Note").id

    def folder_id(self, user: str, folder: str) -> str:
        return self._folder(user, folder).id

    def _folder(self, user: str, folder: str) -> Folder:
        return self.store.find_folder(user, folder)

    def _item(self, user: str, item_id: str) -> Item:
        with self._lock:
            item = self.store.items.get(item_id)
            if item is None or item.mailbox.lower() != user.lower():
                raise KeyError(f"no item {item_id!r} in {user}")
            return item

    # --- items ------------------------------------------------------------------------------------

    def add_message(
        self,
        user: str,
        folder: str,
        mime: bytes,
        *,
        received: dt.datetime | None = None,
        is_read: bool = False,
        categories: Sequence[str] = (),
    ) -> str:
        """Deliver a message (a Create in the folder's sync log); its ItemId."""
        return self.store.add_message(
            self._folder(user, folder), mime, received, is_read, categories
        ).id

    def add_messages(
        self,
        user: str,
        folder: str,
        mimes: Iterable[bytes],
        *,
        received: dt.datetime | None = None,
        is_read: bool = False,
    ) -> list[str]:
        """Deliver many messages (constant work per message); their ItemIds in order."""
        target = self._folder(user, folder)
        return [self.store.add_message(target, m, received, is_read).id for m in mimes]

    def add_event(
        self,
        user: str,
        subject: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        folder: str = "calendar",
        location: str | None = None,
        extended: Mapping[PropKey, tuple[str, str]] | None = None,
    ) -> str:
        """A calendar item; ``extended`` maps properties to (PropertyType, value)."""
        props = {k: ExtValue(t, v) for k, (t, v) in (extended or {}).items()}
        return self.store.add_event(
            self._folder(user, folder), subject, start, end, location, props
        ).id

    def move_event(self, user: str, item_id: str, start: dt.datetime, end: dt.datetime) -> None:
        """Reschedule a calendar item (an Update in the calendar's sync log)."""
        with self._lock:
            item = self._item(user, item_id)
            item.start, item.end = aware(start), aware(end)
            self.store.touch(item)

    def set_extended(
        self, user: str, item_id: str, key: PropKey, property_type: str, value: str
    ) -> None:
        with self._lock:
            item = self._item(user, item_id)
            item.extended[key] = ExtValue(property_type, value)
            self.store.touch(item)

    def set_flag(
        self,
        user: str,
        item_id: str,
        status: FlagStatus,
        start: dt.datetime | None = None,
        due: dt.datetime | None = None,
        complete: dt.datetime | None = None,
    ) -> None:
        """Change the follow-up flag as another client would (an Update in sync)."""
        with self._lock:
            item = self._item(user, item_id)
            if status == "Complete" and complete is None:
                complete = dt.datetime.now(dt.UTC).replace(microsecond=0)
            item.flag = Flag(
                status,
                aware(start) if start else None,
                aware(due) if due else None,
                aware(complete) if complete else None,
            )
            self.store.touch(item)

    def mark_read(self, user: str, item_id: str, is_read: bool = True) -> None:
        with self._lock:
            item = self._item(user, item_id)
            item.is_read = is_read
            self.store.touch(item, "R")

    def set_categories(self, user: str, item_id: str, categories: Sequence[str]) -> None:
        with self._lock:
            item = self._item(user, item_id)
            item.categories = list(categories)
            self.store.touch(item)

    def move(self, user: str, item_id: str, folder: str) -> str:
        """Move an item as another client would; its new ItemId."""
        with self._lock:
            return self.store.move(self._item(user, item_id), self._folder(user, folder)).id

    def delete_folder(self, user: str, folder: str) -> None:
        """Delete a folder (and what it holds) as another client would: its id is gone."""
        with self._lock:
            self.store.delete_folder(self._folder(user, folder))

    def delete(self, user: str, item_id: str) -> None:
        with self._lock:
            self.store.delete(self._item(user, item_id))

    def item(self, user: str, item_id: str) -> ItemState:
        """A snapshot of an item (KeyError when the id is gone, e.g. after a move)."""
        with self._lock:
            return self.store.state(self._item(user, item_id))

    def exists(self, user: str, item_id: str) -> bool:
        try:
            self._item(user, item_id)
        except KeyError:
            return False
        return True

    def folder_items(self, user: str, folder: str) -> list[ItemState]:
        with self._lock:
            return [self.store.state(i) for i in self._folder(user, folder).items.values()]

    # --- faults and records -----------------------------------------------------------------------

    def busy(
        self,
        times: int = 1,
        back_off_ms: int | None = 2000,
        operation: str | None = None,
        *,
        in_message: bool = False,
    ) -> None:
        """The next ``times`` requests (of ``operation``, or any) answer ErrorServerBusy as
        Exchange does when throttling ("EWS throttling in Exchange"): HTTP 500, a SOAP fault
        whose MessageXml carries ``<t:Value Name="BackOffMilliseconds">``; with
        ``in_message``, HTTP 200 with every response message ``ResponseClass="Error"``,
        ResponseCode ErrorServerBusy and the same value in its ``m:MessageXml``. ``back_off_ms``
        None leaves the value out. Nothing is changed in the mailbox."""
        self._faults.add(
            _Fault(operation, "ErrorServerBusy", not in_message, back_off_ms=back_off_ms), times
        )

    def fail_next(
        self,
        operation: str,
        code: str,
        *,
        times: int = 1,
        fault: bool = False,
        text: str | None = None,
    ) -> None:
        """The next ``times`` requests of ``operation`` answer ``code``: in every response
        message (``ResponseClass="Error"``), or with ``fault=True`` as an HTTP 500 SOAP fault.
        Nothing is changed in the mailbox."""
        self._faults.add(_Fault(operation, code, fault, text), times)

    def before(self, operation: str, action: Callable[[], None]) -> None:
        """Run ``action`` once, just before the next ``operation`` request is carried out (as
        another client acting at that moment would: e.g. creating the folder a CreateFolder
        names)."""
        self._before.add((operation, action))

    def corrupt_sync_states(self) -> None:
        """Every sync state issued so far answers ErrorInvalidSyncStateData from now on."""
        self.store.corrupt_sync_states()

    @property
    def sync_calls(self) -> list[SyncCall]:
        with self._lock:
            return list(self.ops.sync_calls)

    @property
    def get_item_counts(self) -> list[int]:
        """How many items each GetItem request returned, in order."""
        with self._lock:
            return list(self.ops.get_item_counts)

    # --- HTTP -------------------------------------------------------------------------------------

    def _authenticate(self, headers: dict[str, str]) -> _Who | str | None:
        """Who sent the request, an NTLM CHALLENGE token to answer with (the second leg of the
        handshake), or None when not authenticated."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in self.auth_schemes:
            try:
                name, _, password = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            box = self.store.mailboxes.get(name.lower())
            if box is None or box.password is None or box.password != password:
                return None
            return _Who(box.address)
        if scheme == "bearer" and self.check_bearer and self.check_bearer(value.strip()):
            return _Who(None, bearer=True)
        if "ntlm" in self.auth_schemes and scheme in ("ntlm", ""):
            # without a header: whoever signed in on this connection (NTLM authenticates it)
            result = self.ntlm.step(value) if scheme else self.ntlm.connection
            if result.challenge is not None:
                return result.challenge
            if result.account is not None:
                return _Who(result.account.mailbox, ntlm_user=result.principal)
        return None

    def _offers(self) -> str:
        offers = ["NTLM"] if "ntlm" in self.auth_schemes else []
        if "basic" in self.auth_schemes:
            offers.append('Basic realm="127.0.0.1"')
        if self.check_bearer:
            offers.append("Bearer")
        return ", ".join(offers)

    @property
    def ntlm_challenges(self) -> int:
        """NTLM handshakes started (CHALLENGE messages sent)."""
        return self.ntlm.challenges

    def _serve(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if path.split("?")[0].lower() != PATH:
            return Reply(404, b"Not Found", {"Content-Type": "text/plain"})
        if method != "POST":
            return Reply(405, b"", {"Allow": "POST"})
        with self._lock:
            who = self._authenticate(headers)
            if not isinstance(who, _Who):
                self.unauthorized += 1
                challenge = self._offers() if who is None else f"NTLM {who}"
                return Reply(401, b"", {"WWW-Authenticate": challenge})
            return self._soap(who, headers, body)

    def _soap(self, who: _Who, headers: dict[str, str], raw: bytes) -> Reply:
        user, bearer = who.user, who.bearer
        try:
            doc = ET.fromstring(raw)
        except ET.ParseError:
            return Reply(500, fault(SoapFault("ErrorSchemaValidation")), {"Content-Type": XML_TYPE})
        header = doc.find(f"{{{SOAP}}}Header")
        body = doc.find(f"{{{SOAP}}}Body")
        request = None if body is None or len(body) == 0 else body[0]
        op = "" if request is None else local(request.tag)
        self.calls[op] += 1
        version_elem = None if header is None else child(header, TNS, "RequestServerVersion")
        api_version = None if version_elem is None else version_elem.get("Version")
        impersonated = _impersonated(header)
        caller = Caller(user, impersonated or user or headers.get("x-anchormailbox"), impersonated)
        status = 200
        try:
            if request is None or request.tag.split("}")[0].lstrip("{") != MNS:
                raise SoapFault("ErrorSchemaValidation")
            self._check_faults(op)
            self._run_before(op)
            if api_version is not None and api_version not in API_VERSIONS:
                raise SoapFault("ErrorInvalidServerVersion")
            self._check_impersonation(user, bearer, impersonated)
            handler = self.ops.handlers.get(op)
            if handler is None:
                raise SoapFault("ErrorSchemaValidation", f"The fake EWS does not implement {op}.")
            messages = self._planned_failure(op, request) or handler(request, caller)
            payload = envelope(op, messages)
        except SoapFault as error:
            status, payload = 500, fault(error)
        self._requests.add(
            EwsRequest(
                op,
                user,
                impersonated,
                tuple(caller.acted_for),
                headers.get("x-anchormailbox"),
                api_version,
                status,
                who.ntlm_user,
            )
        )
        return Reply(status, payload, {"Content-Type": XML_TYPE})

    def _take(self, op: str, as_fault: bool) -> _Fault | None:
        return self._faults.take(lambda r: r.as_fault == as_fault and r.operation in (None, op))

    def _run_before(self, op: str) -> None:
        hook = self._before.take(lambda h: h[0] == op)
        if hook is not None:
            hook[1]()

    def _check_faults(self, op: str) -> None:
        rule = self._take(op, as_fault=True)
        if rule is not None:
            raise SoapFault(rule.code, rule.text, rule.back_off_ms)

    def _planned_failure(self, op: str, request: ET.Element) -> list[ET.Element] | None:
        rule = self._take(op, as_fault=False)
        if rule is None:
            return None
        container = _UNITS.get(op)
        units = child(request, MNS, container) if container else None
        count = 1 if units is None else max(1, len(units))
        extra: list[ET.Element] = []
        if op == "SyncFolderItems":
            extra = [el("m:SyncState"), el("m:IncludesLastItemInRange", "true")]
        elif op == "CreateItem":
            extra = [el("m:Items")]
        return [
            error_message(op, rule.code, rule.text, extra, back_off_ms=rule.back_off_ms)
            for _ in range(count)
        ]

    def _check_impersonation(
        self, user: str | None, bearer: bool, impersonated: str | None
    ) -> None:
        if impersonated is None:
            return
        try:
            target = self.store.mailbox(impersonated)
        except EwsError as error:
            raise SoapFault(error.code, error.text) from None
        if bearer or (user is not None and user.lower() == target.address.lower()):
            return
        actor = self.store.mailboxes.get((user or "").lower())
        if actor is None or not actor.impersonation:
            raise SoapFault("ErrorImpersonateUserDenied")


def _impersonated(header: ET.Element | None) -> str | None:
    """The mailbox named by ExchangeImpersonation/ConnectingSID ("ConnectingSID")."""
    impersonation = None if header is None else child(header, TNS, "ExchangeImpersonation")
    sid = None if impersonation is None else child(impersonation, TNS, "ConnectingSID")
    for name in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName", "SID"):
        value = text_of(sid, TNS, name)
        if value:
            return value.strip()
    return None
