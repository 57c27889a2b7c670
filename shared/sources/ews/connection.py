"""One exchangelib `Account` per EWS mailbox, built the way a timer function needs it.

- An explicit service endpoint; autodiscover only when configured.
- `FailFast`: exchangelib's default retry policy sleeps in-process (up to an hour) and reads a
  401 as "busy". We raise at once and let the poll reschedule itself after the server's
  back-off (a delayed queue message).
- Access type always stated (exchangelib defaults to impersonation when only given a config).
- Mailboxes with the same endpoint and credentials share one `Configuration`, so exchangelib
  gives them one protocol and one connection pool.
- A custom CA bundle is chosen per host by an HTTP adapter, exchangelib's documented hook
  (`BaseProtocol.HTTP_ADAPTER_CLS`), so one internal CA does not weaken other endpoints.
- One `Account` per mailbox and process (a new one costs requests: root and well-known folders
  are fetched again), reused by every poll, action and send of that mailbox.
- ErrorServerBusy's `BackOffMilliseconds` is read wherever the server puts it: exchangelib reads
  it only from a SOAP fault (and only when it is the first value), so a busy answer inside a
  response message ("EWS throttling in Exchange": ResponseCode ErrorServerBusy with
  MessageXml/Value Name="BackOffMilliseconds") got its 10 s retry default instead.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests.adapters
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Credentials,
    Identity,
    OAuth2AuthorizationCodeCredentials,
    Version,
)
from exchangelib.errors import ErrorServerBusy  # type: ignore[import-untyped]
from exchangelib.protocol import BaseProtocol, FailFast  # type: ignore[import-untyped]
from exchangelib.services.common import EWSService  # type: ignore[import-untyped]
from exchangelib.util import ENS, MNS, TNS  # type: ignore[import-untyped]

from ...core.config import EwsMailbox
from ...core.errors import MailfilerError


class EwsConfigError(RuntimeError, MailfilerError):
    """The mailbox cannot be opened as configured (a missing setting, a bad CA file)."""


_ca_bundles: dict[str, str] = {}  # host:port -> PEM file
_lock = threading.Lock()
_configs: dict[tuple[Any, ...], Any] = {}
_accounts: dict[tuple[Any, ...], Any] = {}
DEFAULT_BACK_OFF = 60.0  # seconds, when a busy answer names no back-off
MAX_BACK_OFF = 3600.0  # a server's number is trusted up to this (broken or hostile)


class _PerHostCaAdapter(requests.adapters.HTTPAdapter):
    """Verifies each EWS host against its configured CA bundle, others as requests does."""

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        parsed = urlparse(url)
        bundle = _ca_bundles.get(f"{parsed.hostname}:{parsed.port or 443}")
        super().cert_verify(conn=conn, url=url, verify=bundle or verify, cert=cert)


BaseProtocol.HTTP_ADAPTER_CLS = _PerHostCaAdapter


class MsalCredentials(OAuth2AuthorizationCodeCredentials):  # type: ignore[misc]
    """App-only tokens from our msal/azure-identity provider. exchangelib calls `refresh(session)`
    when a token is refused or expires (the docs' `refresh(self)` is wrong, exchangelib#852)."""

    def __init__(self, provider: Any, identity: Any) -> None:
        super().__init__(identity=identity, access_token=self._token(provider))
        self._provider = provider

    @staticmethod
    def _token(provider: Any) -> dict[str, Any]:
        return {
            "access_token": provider.token(),
            "token_type": "Bearer",
            "expires_at": time.time() + 300,
        }

    def refresh(self, session: Any) -> None:  # noqa: ARG002 (exchangelib's signature)
        self._provider.invalidate()
        self.access_token = self._token(self._provider)


def account_for(mailbox: EwsMailbox, environ: Any = None) -> Any:
    """The mailbox's `Account`, built once per process for the same endpoint, credentials and
    access (exchangelib's Account is thread-safe: its folders are cached under locks)."""
    env = os.environ if environ is None else environ
    if mailbox.ca_bundle:
        if not Path(mailbox.ca_bundle).is_file():
            raise EwsConfigError(f"ca_bundle {mailbox.ca_bundle} is not a file")
        parsed = urlparse(mailbox.endpoint)
        with _lock:
            _ca_bundles[f"{parsed.hostname}:{parsed.port or 443}"] = mailbox.ca_bundle
    config = _configuration(mailbox, env)
    access = IMPERSONATION if mailbox.access_type == "impersonation" else DELEGATE
    # The configuration is cached per endpoint and credential (a new password: a new one).
    key = (id(config), mailbox.email.lower(), access, mailbox.autodiscover)
    with _lock:
        found = _accounts.get(key)
    if found is not None:
        return found
    with key_lock(key):  # workers starting at once build one account, not one each
        with _lock:
            found = _accounts.get(key)
        if found is not None:
            return found
        account = Account(
            primary_smtp_address=mailbox.email,
            config=config,
            autodiscover=mailbox.autodiscover,
            access_type=access,
        )
        with _lock:
            return _accounts.setdefault(key, account)


_key_locks: dict[tuple[Any, ...], threading.Lock] = {}


def key_lock(key: tuple[Any, ...]) -> threading.Lock:
    """A lock per cache key: the first thread builds (an account, a folder), the others wait
    for it instead of sending the same requests."""
    with _lock:
        return _key_locks.setdefault(key, threading.Lock())


def back_off_seconds(message_xml: Any) -> float | None:
    """BackOffMilliseconds from a MessageXml element, in seconds (None when absent or not a
    number); at most MAX_BACK_OFF."""
    if message_xml is None:
        return None
    for value in message_xml.iter(f"{{{TNS}}}Value"):
        if value.get("Name") != "BackOffMilliseconds":
            continue
        try:
            millis = int((value.text or "").strip())
        except ValueError:
            return None
        return min(max(millis, 0) / 1000.0, MAX_BACK_OFF)
    return None


def _patch_back_off() -> None:
    """Make every ErrorServerBusy carry the server's BackOffMilliseconds (or our default, never
    exchangelib's 10 s retry wait). exchangelib has no hook for this; the two functions it
    builds the exception in are wrapped, once per process."""
    if getattr(EWSService, "_mailfiler_back_off", False):
        return
    get_exception = EWSService._get_exception
    raise_soap_errors = EWSService._raise_soap_errors.__func__

    def _get_exception(code: Any, text: Any, msg_xml: Any = None, rule_errors: Any = None) -> Any:
        exc = get_exception(code, text, msg_xml=msg_xml, rule_errors=rule_errors)
        if isinstance(exc, ErrorServerBusy) and not exc.back_off:
            exc.back_off = back_off_seconds(msg_xml) or DEFAULT_BACK_OFF
        return exc

    def _raise_soap_errors(cls: Any, fault: Any) -> Any:
        try:
            return raise_soap_errors(cls, fault)
        except ErrorServerBusy as exc:
            detail = fault.find("detail")
            xml = None
            for ns in (TNS, MNS, ENS):  # Exchange uses the types namespace; be lenient
                if xml is None and detail is not None:
                    xml = detail.find(f"{{{ns}}}MessageXml")
            exc.back_off = back_off_seconds(xml) or exc.back_off or DEFAULT_BACK_OFF
            raise

    EWSService._get_exception = staticmethod(_get_exception)
    EWSService._raise_soap_errors = classmethod(_raise_soap_errors)
    EWSService._mailfiler_back_off = True


_patch_back_off()


def _configuration(mailbox: EwsMailbox, env: Any) -> Any:
    version = None
    if mailbox.version:
        major, minor = (int(p) for p in mailbox.version.split("."))
        version = Version(build=Build(major, minor))
    if mailbox.auth == "oauth":
        assert mailbox.oauth is not None
        from ..graph.auth import GraphAuthError, provider_for

        try:
            provider = provider_for(mailbox.oauth, env, scope=mailbox.oauth.scope)
            key: tuple[Any, ...] = (mailbox.endpoint, "oauth", id(provider), mailbox.email)
            with _lock:
                found = _configs.get(key)
            if found is not None:
                return found
            credentials = MsalCredentials(provider, Identity(primary_smtp_address=mailbox.email))
        except GraphAuthError as exc:
            raise EwsConfigError(str(exc)) from exc
        auth_type = OAUTH2
    else:
        password = env.get(mailbox.password_setting or "")
        if not password:
            raise EwsConfigError(f"app setting {mailbox.password_setting} is not set")
        secret = hashlib.sha256(password.encode()).hexdigest()
        key = (mailbox.endpoint, mailbox.auth, mailbox.username, secret, mailbox.version)
        with _lock:
            found = _configs.get(key)
        if found is not None:
            return found
        credentials = Credentials(mailbox.username, password)
        auth_type = NTLM if mailbox.auth == "ntlm" else BASIC
    config = Configuration(
        service_endpoint=None if mailbox.autodiscover else mailbox.endpoint,
        credentials=credentials,
        auth_type=auth_type,
        version=version,
        retry_policy=FailFast(),
    )
    with _lock:
        return _configs.setdefault(key, config)
