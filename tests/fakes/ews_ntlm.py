"""NTLM over HTTP for the fake EWS (MS-NTHT), with pyspnego as the acceptor.

The exchange on one keep-alive connection::

    POST (no Authorization)               -> 401  WWW-Authenticate: NTLM, Basic realm=...
    POST  Authorization: NTLM <NEGOTIATE>  -> 401  WWW-Authenticate: NTLM <CHALLENGE>
    POST  Authorization: NTLM <AUTHENTICATE> -> 200 (or 401 again for a wrong password)

NTLM authenticates the connection, not the request: later requests on that connection need no
``Authorization`` header (requests_ntlm sends none until it sees a 401). So the acceptor state and
the signed-in user live per connection: :class:`ConnectionListener` (the harness's
:class:`~tests.fakes.harness.HttpServer`, which serves each connection in its own thread) gives
every connection fresh thread-local state.

pyspnego's NTLM acceptor (``spnego.server(protocol="ntlm")``, i.e. ``NTLMProxy`` with usage
"accept") takes no credentials: it refuses to start unless the environment variable
``NTLM_USER_FILE`` names an existing file, and looks the user up in that file (``DOMAIN:USER:
PASSWORD`` per line) when the AUTHENTICATE message arrives. :class:`_UserFile` therefore keeps one
such file in a temporary directory for all running fakes of the process, sets ``NTLM_USER_FILE``
while at least one fake with NTLM runs and restores the previous value when the last one closes.
One consequence: while such a fake runs, an NTLM *initiator* in the process that is given no
password would take its credential from that file (exchangelib always passes one).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spnego
from spnego.exceptions import SpnegoError

from tests.fakes.harness import App, HttpServer, ServerTls

ENV = "NTLM_USER_FILE"
_SIGNATURE = b"NTLMSSP\x00"
_NEGOTIATE, _AUTHENTICATE = 1, 3


def ntlm_key(name: str) -> str:
    """How the fake compares NTLM account names: ``DOMAIN\\user`` or ``user@domain`` (or a bare
    ``user``), case-insensitively."""
    return name.lower()


class ConnectionListener(HttpServer):
    """An HttpServer that calls ``on_connection`` in a connection's thread before its first request
    and after its last one (so per-connection thread-local state starts and ends clean)."""

    def __init__(self, app: App, tls: ServerTls | None, on_connection: Callable[[], None]) -> None:
        super().__init__(app, tls)
        self._on_connection = on_connection

    def finish_request(self, request: Any, client_address: Any) -> None:
        self._on_connection()
        try:
            super().finish_request(request, client_address)
        finally:
            self._on_connection()


@dataclass(frozen=True)
class NtlmAccount:
    name: str  # as added: CONTOSO\ann or ann@contoso.com
    password: str
    mailbox: str  # the fake's mailbox (SMTP address) the account acts as


@dataclass(frozen=True)
class NtlmResult:
    """What one request's NTLM state says: ``challenge`` (answer 401 with this CHALLENGE token),
    ``account`` (authenticated; the principal as the client sent it in ``principal``) or neither
    (answer 401 with the normal offers)."""

    challenge: str | None = None
    account: NtlmAccount | None = None
    principal: str | None = None


class _Connection(threading.local):
    acceptor: spnego.ContextProxy | None = None  # between NEGOTIATE and AUTHENTICATE
    account: NtlmAccount | None = None
    principal: str | None = None


class NtlmAcceptor:
    """The fake's NTLM accounts and the per-connection handshakes (see the module docstring)."""

    def __init__(self) -> None:
        self.accounts: dict[str, NtlmAccount] = {}
        self._conn = _Connection()
        self._file_owned = False
        self.challenges = 0  # CHALLENGE messages sent (one per handshake)

    # --- accounts and the credential file ---------------------------------------------------------

    def check(self, name: str, password: str) -> None:
        """ValueError unless :meth:`add` would take the account."""
        for part in (name, password):  # the credential file has DOMAIN:USER:PASSWORD lines
            if ":" in part or "\n" in part or "\r" in part:
                raise ValueError("NTLM names and passwords for the fake may not contain ':' or EOL")
        if ntlm_key(name) in self.accounts:
            raise ValueError(f"NTLM account {name} exists")
        if self._file_owned:
            _USER_FILE.check(self, self._lines(NtlmAccount(name, password, "")))

    def add(self, name: str, password: str, mailbox: str) -> None:
        self.check(name, password)
        account = NtlmAccount(name, password, mailbox)
        if self._file_owned:  # first, as it may refuse the account
            _USER_FILE.update(self, self._lines(account))
        self.accounts[ntlm_key(name)] = account

    def _lines(self, *extra: NtlmAccount) -> list[str]:
        lines = []
        for account in (*self.accounts.values(), *extra):
            domain, sep, user = account.name.partition("\\")  # as pyspnego splits it
            if not sep:
                domain, user = "", account.name
            lines.append(f"{domain}:{user}:{account.password}")
        return lines

    def start(self) -> None:
        if not self._file_owned:
            _USER_FILE.update(self, self._lines())
            self._file_owned = True

    def close(self) -> None:
        if self._file_owned:
            _USER_FILE.remove(self)
            self._file_owned = False

    # --- per connection ---------------------------------------------------------------------------

    def reset_connection(self) -> None:
        self._conn.acceptor = None
        self._conn.account = None
        self._conn.principal = None

    @property
    def connection(self) -> NtlmResult:
        """The account this connection signed in as (an empty result when none)."""
        return NtlmResult(account=self._conn.account, principal=self._conn.principal)

    def step(self, value: str) -> NtlmResult:
        """Handle ``Authorization: NTLM <value>`` on the current connection."""
        conn = self._conn
        try:
            token = base64.b64decode(value.strip(), validate=True)
            kind = struct.unpack("<I", token[8:12])[0] if token[:8] == _SIGNATURE else 0
        except (binascii.Error, ValueError, struct.error):
            kind = 0
        if kind == _NEGOTIATE:  # a new handshake; it replaces any earlier sign-in
            self.reset_connection()
            fresh = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
            try:
                challenge = fresh.step(token)
            except (SpnegoError, ValueError, struct.error):
                return NtlmResult()
            conn.acceptor = fresh
            self.challenges += 1
            return NtlmResult(challenge=base64.b64encode(challenge or b"").decode("ascii"))
        acceptor, conn.acceptor = conn.acceptor, None
        if kind != _AUTHENTICATE or acceptor is None:
            self.reset_connection()
            return NtlmResult()
        try:  # a wrong password or an unknown account raises here
            acceptor.step(token)
        except (SpnegoError, ValueError, struct.error):
            self.reset_connection()
            return NtlmResult()
        principal = acceptor.client_principal if acceptor.complete else None
        account = None if principal is None else self.accounts.get(ntlm_key(principal))
        if account is None:
            self.reset_connection()
            return NtlmResult()
        conn.account, conn.principal = account, principal
        return NtlmResult(account=account, principal=principal)


class _UserFile:
    """The ``NTLM_USER_FILE`` shared by every running fake that accepts NTLM in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[int, list[str]] = {}
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._saved: str | None = None

    def check(self, owner: object, lines: list[str]) -> None:
        with self._lock:
            self._check(owner, lines)

    def update(self, owner: object, lines: list[str]) -> None:
        with self._lock:
            self._check(owner, lines)
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="fake-ews-ntlm-")
                self._saved = os.environ.get(ENV)
                os.environ[ENV] = str(Path(self._dir.name) / "users")
            self._owners[id(owner)] = lines
            self._write()

    def remove(self, owner: object) -> None:
        with self._lock:
            self._owners.pop(id(owner), None)
            if self._owners or self._dir is None:
                if self._dir is not None:
                    self._write()
                return
            if self._saved is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = self._saved
            self._dir.cleanup()
            self._dir = None

    def _check(self, owner: object, lines: list[str]) -> None:
        """pyspnego takes the first line that matches a name: two fakes may share an account
        only with the same password."""
        mine = {_line_key(line): line for line in lines}
        for other, their_lines in self._owners.items():
            if other == id(owner):
                continue
            for line in their_lines:
                same = mine.get(_line_key(line))
                if same is not None and same != line:
                    raise ValueError(
                        "another running FakeEws has this NTLM account with another password"
                    )

    def _write(self) -> None:
        assert self._dir is not None
        path = Path(self._dir.name) / "users"
        text = "".join(f"{line}\n" for lines in self._owners.values() for line in lines)
        temp = path.with_suffix(".tmp")
        temp.write_text(text, encoding="utf-8")
        temp.replace(path)  # the acceptor may be reading the file in another thread


def _line_key(line: str) -> str:
    domain, user, _ = line.split(":", 2)
    return f"{domain}\\{user}".lower()


_USER_FILE = _UserFile()
