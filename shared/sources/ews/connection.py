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
from exchangelib.protocol import BaseProtocol, FailFast  # type: ignore[import-untyped]

from ...core.config import EwsMailbox


class EwsConfigError(RuntimeError):
    """The mailbox cannot be opened as configured (a missing setting, a bad CA file)."""


_ca_bundles: dict[str, str] = {}  # host:port -> PEM file
_lock = threading.Lock()
_configs: dict[tuple[Any, ...], Any] = {}


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
    env = os.environ if environ is None else environ
    if mailbox.ca_bundle:
        if not Path(mailbox.ca_bundle).is_file():
            raise EwsConfigError(f"ca_bundle {mailbox.ca_bundle} is not a file")
        parsed = urlparse(mailbox.endpoint)
        with _lock:
            _ca_bundles[f"{parsed.hostname}:{parsed.port or 443}"] = mailbox.ca_bundle
    config = _configuration(mailbox, env)
    access = IMPERSONATION if mailbox.access_type == "impersonation" else DELEGATE
    return Account(
        primary_smtp_address=mailbox.email,
        config=config,
        autodiscover=mailbox.autodiscover,
        access_type=access,
    )


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
