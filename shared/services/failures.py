"""A mailbox's failure in plain words, with the setting to fix: the one place that turns what a
source raised into what `mailfiler status`, the stored mailbox status, the logs and the
console's operations page say.

A source raises its own error (ImapError, GraphError, EwsError, LocalSourceError...) with the
library's exception as its cause; this module reads that chain and the mailbox's configuration
and names the setting (the app setting holding the password, the config key with the host, the
Entra app's permissions). An error of a kind it does not know is said as it is, marked
unexpected, so the logs keep a traceback for it (a bug, or a failure worth a new kind here).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.config import EwsMailbox, GmailOAuth, GraphMailbox, ImapMailbox, LocalMailbox, Mailbox
from ..core.errors import MailfilerError

FIX = "\nfix: "  # between the words and the fix in a stored LastError
_BYTES = re.compile(r"""b(['"])(.*?)\1""")  # a Python bytes value in a library's message


@dataclass(frozen=True)
class MailboxFailure:
    """What went wrong (`error`), what to change (`fix`, None when we cannot tell), and whether
    it is a failure the app knows (wrong password, server unreachable...) or a surprise."""

    error: str
    fix: str | None
    expected: bool = True

    def text(self) -> str:
        """One string for the status row's LastError (split again by `split_stored`)."""
        return self.error + (FIX + self.fix if self.fix else "")

    def line(self) -> str:
        """One log line."""
        return self.error + (f" (fix: {self.fix})" if self.fix else "")


def split_stored(text: str | None) -> tuple[str | None, str | None]:
    """A stored LastError back into (error, fix); rows written before carry no fix."""
    if not text:
        return None, None
    error, _, fix = text.partition(FIX)
    return error, fix or None


def plain(text: str, limit: int = 300) -> str:
    """A library's message without Python's spelling of bytes (b'...'), on one line."""
    text = _BYTES.sub(lambda m: m.group(2), text)
    return " ".join(text.split())[:limit]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _named(chain: list[BaseException], *names: str) -> BaseException | None:
    """The first exception of the chain whose class (or a base) has one of these names: the
    library's own classes, without importing imapclient, exchangelib or httpx here."""
    for exc in chain:
        if any(cls.__name__ in names for cls in type(exc).__mro__):
            return exc
    return None


def _of(chain: list[BaseException], kind: type[BaseException]) -> BaseException | None:
    return next((e for e in chain if isinstance(e, kind)), None)


def _unreachable_reason(chain: list[BaseException]) -> str | None:
    """'connection refused', 'timed out'... when the server could not be reached at all."""
    if _of(chain, ConnectionRefusedError):
        return "connection refused"
    if _of(chain, socket.gaierror):
        return "no such host name"
    if _of(chain, TimeoutError) or _named(chain, "TimeoutException", "Timeout"):
        return "timed out"
    if _of(chain, ConnectionError) or _named(chain, "ConnectError", "ConnectionError"):
        return "connection failed"
    return None


def _cert_detail(chain: list[BaseException]) -> str | None:
    """The TLS library's words when a server's certificate was refused (wrapped by requests
    or httpx as a connection error, so looked for before "unreachable")."""
    for exc in chain:
        text = str(exc)
        if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            return plain(text)
    return None


def _missing_setting(name: str | None) -> str | None:
    return name if name and not os.environ.get(name) else None


def describe_failure(mailbox: Mailbox, exc: BaseException) -> MailboxFailure:
    """`exc`, raised while polling `mailbox`, in plain words with the setting to fix."""
    chain = list(_chain(exc))
    found: MailboxFailure | None = None
    if isinstance(mailbox, ImapMailbox):
        found = _imap(mailbox, chain)
    elif isinstance(mailbox, GraphMailbox):
        found = _graph(mailbox, chain)
    elif isinstance(mailbox, EwsMailbox):
        found = _ews(mailbox, chain)
    elif isinstance(mailbox, LocalMailbox):
        found = _local(mailbox, chain)
    if found is not None:
        return found
    first = (str(exc) or type(exc).__name__).splitlines()[0]
    # An error of ours is in our words already; anything else is a surprise, said with its
    # type, and worth its traceback in the log.
    if isinstance(exc, MailfilerError):
        return MailboxFailure(plain(first, 1000), None)
    return MailboxFailure(f"{type(exc).__name__}: {plain(first, 1000)}", None, expected=False)


def _imap(mb: ImapMailbox, chain: list[BaseException]) -> MailboxFailure | None:
    server = f"IMAP server {mb.host}:{mb.server_port}"
    where = f"mailboxes.{mb.name}"
    missing = _missing_setting(mb.password_setting) if mb.auth == "password" else None
    if missing:
        return MailboxFailure(
            f"{server}: app setting {missing} is not set",
            f"set {missing} to the password of {mb.username} (local.settings.json, or the "
            "function app's settings)",
        )
    login = _named(chain, "LoginError")
    if login is not None:
        answer = plain(str(login))
        if mb.auth == "xoauth2":
            if isinstance(mb.oauth, GmailOAuth):
                fix = (
                    f"check the refresh token in app setting {mb.oauth.refresh_token_setting} "
                    f"and the client secret in {mb.oauth.client_secret_setting}"
                )
            elif mb.oauth is not None and mb.oauth.auth == "device_code":
                fix = f"sign in again: mailfiler auth imap --mailbox {mb.name}"
            else:
                fix = (
                    f"check the Entra app's credentials ({where}.oauth) and that it may open "
                    f"{mb.shared_mailbox or mb.username} over IMAP"
                )
            return MailboxFailure(f"{server} refused the token for {mb.username}: {answer}", fix)
        return MailboxFailure(
            f"{server} refused the login of {mb.username}: {answer}",
            f"check the password in app setting {mb.password_setting} "
            f"({where}.password_setting) and the user name ({where}.username)",
        )
    cert = _cert_detail(chain)
    if cert is not None:
        return MailboxFailure(
            f"{server}: its TLS certificate is not trusted ({cert})",
            f"set {where}.ca_bundle to the PEM file of the CA that signed it, or check "
            f"{where}.host is the name on the certificate",
        )
    tls = _of(chain, ssl.SSLError)
    if tls is not None:
        return MailboxFailure(
            f"{server}: TLS failed ({plain(str(tls))})",
            f"check {where}.tls ({mb.tls}: implicit on 993, starttls on 143, none only for "
            f"a server on this machine) and {where}.port",
        )
    reason = _unreachable_reason(chain)
    if reason is not None:
        return MailboxFailure(
            f"cannot reach {server} ({reason})",
            f"check {where}.host and {where}.port, and that the server is running",
        )
    return None


def _graph(mb: GraphMailbox, chain: list[BaseException]) -> MailboxFailure | None:
    where = f"mailboxes.{mb.name}"
    secret = mb.client_secret_setting if mb.auth == "client_secret" else None
    secret = secret or (mb.certificate_setting if mb.auth == "certificate" else None)
    missing = _missing_setting(secret)
    if missing:
        return MailboxFailure(
            f"Graph mailbox {mb.user}: app setting {missing} is not set",
            f"set {missing} to the Entra app's {mb.auth.replace('_', ' ')} (local.settings.json, "
            "or the function app's settings)",
        )
    credentials = f"app setting {secret}" if secret else f"the {mb.auth.replace('_', ' ')}"
    status = next((getattr(e, "status", None) for e in chain if hasattr(e, "status")), None)
    auth = _named(chain, "GraphAuthError")
    if auth is not None or status == 401:
        detail = plain(str(auth if auth is not None else chain[0]))
        return MailboxFailure(
            f"Microsoft Entra ID refused the app's sign-in for {mb.user}: {detail}",
            f"check {credentials} (a client secret expires), {where}.client_id and "
            f"{where}.tenant_id",
        )
    if status == 403:
        return MailboxFailure(
            f"Graph denied the app access to {mb.user} (403): admin consent or mailbox scope",
            "grant the Entra app the application permission Mail.ReadWrite with admin consent, "
            f"and include {mb.user} in its Exchange RBAC scope",
        )
    if status == 404:
        return MailboxFailure(
            f"Graph has no mailbox {mb.user} (404)",
            f"check {where}.user (the mailbox's address or object id) and {where}.tenant_id",
        )
    cert = _cert_detail(chain)
    if cert is not None:
        return MailboxFailure(
            f"Graph at {mb.graph_endpoint}: its TLS certificate is not trusted ({cert})",
            "if a proxy inspects TLS, point SSL_CERT_FILE at its CA's PEM file",
        )
    reason = _unreachable_reason(chain)
    if reason is not None or status == 0:
        return MailboxFailure(
            f"cannot reach Graph at {mb.graph_endpoint} ({reason or 'connection failed'})",
            f"check the network and proxy, and {where}.graph_endpoint",
        )
    return None


def _ews(mb: EwsMailbox, chain: list[BaseException]) -> MailboxFailure | None:
    where = f"mailboxes.{mb.name}"
    missing = _missing_setting(mb.password_setting) if mb.auth != "oauth" else None
    if missing:
        return MailboxFailure(
            f"EWS mailbox {mb.email}: app setting {missing} is not set",
            f"set {missing} to the password of {mb.username} (local.settings.json, or the "
            "function app's settings)",
        )
    if _named(chain, "UnauthorizedError", "GraphAuthError"):
        fix = (
            f"check the Entra app's credentials ({where}.oauth)"
            if mb.auth == "oauth"
            else f"check the password in app setting {mb.password_setting} "
            f"({where}.password_setting) and the user name ({where}.username)"
        )
        return MailboxFailure(f"Exchange at {mb.endpoint} refused the login (401)", fix)
    cert = _cert_detail(chain)
    if cert is not None:
        return MailboxFailure(
            f"Exchange at {mb.endpoint}: its TLS certificate is not trusted ({cert})",
            f"set {where}.ca_bundle to the PEM file of the CA that signed it, or check "
            f"{where}.endpoint names the host on the certificate",
        )
    reason = _unreachable_reason(chain)
    if reason is None and _named(chain, "ErrorConnectionFailed", "TransportError"):
        reason = "connection failed"
    if reason is not None:
        return MailboxFailure(
            f"cannot reach Exchange at {mb.endpoint} ({reason})",
            f"check {where}.endpoint and that the server is running",
        )
    return None


def _local(mb: LocalMailbox, chain: list[BaseException]) -> MailboxFailure | None:
    if _named(chain, "LocalSourceError") and "no such file or folder" in str(chain[0]):
        return MailboxFailure(
            f"local mailbox {mb.name}: {mb.path} does not exist",
            f"create the folder, or set mailboxes.{mb.name}.path (relative to the config file)",
        )
    return None


def fingerprint(mailbox: Mailbox) -> str:
    """A mailbox's configuration and the values of its secret settings, hashed: equal while
    nothing an operator can fix changed. Kept in memory only, never stored (a password's hash
    would be worth guessing at)."""
    data = mailbox.model_dump(mode="json")
    names = sorted(_setting_names(data))
    secrets = {name: os.environ.get(name, "") for name in names}
    blob = json.dumps({"config": data, "secrets": secrets}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _setting_names(data: object) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key.endswith("_setting") and isinstance(value, str):
                yield value
            else:
                yield from _setting_names(value)
    elif isinstance(data, list):
        for value in data:
            yield from _setting_names(value)
