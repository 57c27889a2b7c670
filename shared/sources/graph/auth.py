"""Access tokens for Graph, app-only: msal (client secret, certificate) or azure-identity
(managed identity, workload identity). One provider per app and tenant, cached per process.

Tokens are cached until five minutes before they expire; a 401 from Graph drops the cached
token once (`invalidate`). Errors name the tenant, the app and Entra's error code, never a
secret.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from ...core.config import AppCredentials
from ...core.errors import MailfilerError

REFRESH_MARGIN = 300  # seconds before expiry a cached token is replaced
# Authorities msal can discover (the public and national clouds); others (a fake in tests, a
# private authority) skip instance discovery.
KNOWN_AUTHORITIES = {
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "login.chinacloudapi.cn",
}


class GraphAuthError(RuntimeError, MailfilerError):
    """No token: bad credentials, a missing app setting, consent not granted, Entra down."""


class TokenProvider(Protocol):
    def token(self) -> str: ...

    def invalidate(self) -> None: ...


@dataclass
class _Cached:
    value: str = ""
    expires_at: float = 0.0


class _CachingProvider:
    """Holds one token and refreshes it under a lock (one refresh, however many threads)."""

    def __init__(self, describe: str) -> None:
        self.describe = describe
        self._cached = _Cached()
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._cached.expires_at - REFRESH_MARGIN > time.time():
                return self._cached.value
            value, expires_at = self._acquire()
            self._cached = _Cached(value, expires_at)
            return value

    def invalidate(self) -> None:
        with self._lock:
            self._cached = _Cached()

    def _acquire(self) -> tuple[str, float]:
        raise NotImplementedError


class MsalProvider(_CachingProvider):
    """Client credentials flow through msal (secret, or a certificate's private key)."""

    def __init__(
        self, mailbox: AppCredentials, scope: str, credential: str | dict[str, str], describe: str
    ) -> None:
        super().__init__(describe)
        import msal  # imported here: the webhook path never needs it

        login = mailbox.login_endpoint.rstrip("/")
        self._scopes = [scope]
        try:
            self._app = msal.ConfidentialClientApplication(
                mailbox.client_id,
                client_credential=credential,
                authority=f"{login}/{mailbox.tenant_id}",
                instance_discovery=urlparse(login).hostname in KNOWN_AUTHORITIES,
            )
        except ValueError as exc:
            raise GraphAuthError(f"{describe}: {exc}") from exc

    def _acquire(self) -> tuple[str, float]:
        try:
            result: dict[str, Any] = self._app.acquire_token_for_client(scopes=self._scopes)
        except Exception as exc:  # msal raises requests' errors when Entra cannot be reached
            raise GraphAuthError(f"{self.describe}: token request failed: {exc}") from exc
        if "access_token" not in result:
            code = result.get("error", "unknown_error")
            detail = str(result.get("error_description", "")).splitlines()[0][:300]
            raise GraphAuthError(f"{self.describe}: {code}: {detail}")
        return str(result["access_token"]), time.time() + float(result.get("expires_in", 3599))


class AzureIdentityProvider(_CachingProvider):
    """Managed identity (App Service / Functions) or workload identity, via azure-identity."""

    def __init__(self, mailbox: AppCredentials, scope: str, describe: str) -> None:
        super().__init__(describe)
        from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

        self._scope = scope
        self._credential: Any
        if mailbox.auth == "managed_identity":
            self._credential = (
                ManagedIdentityCredential(client_id=mailbox.client_id)
                if mailbox.client_id
                else ManagedIdentityCredential()
            )
        else:
            self._credential = WorkloadIdentityCredential(
                tenant_id=mailbox.tenant_id, client_id=mailbox.client_id
            )

    def _acquire(self) -> tuple[str, float]:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            token = self._credential.get_token(self._scope)
        except (ClientAuthenticationError, ValueError) as exc:
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise GraphAuthError(f"{self.describe}: {first}") from exc
        return str(token.token), float(token.expires_on)


_providers: dict[str, TokenProvider] = {}
_providers_lock = threading.Lock()


def provider_for(
    mailbox: AppCredentials, environ: dict[str, str] | None = None, *, scope: str | None = None
) -> TokenProvider:
    """The process's token provider for this app, tenant and scope (shared by mailboxes). The
    scope defaults to Graph's (`<graph_endpoint>/.default`); IMAP asks for Exchange's."""
    env = os.environ if environ is None else environ
    scope = scope or f"{mailbox.graph_endpoint.rstrip('/')}/.default"
    describe = f"auth ({mailbox.auth}, tenant {mailbox.tenant_id}, app {mailbox.client_id})"
    credential: str | dict[str, str] | None = None
    if mailbox.auth == "client_secret":
        credential = _setting(env, mailbox.client_secret_setting, describe)
    elif mailbox.auth == "certificate":
        credential = certificate_credential(
            _setting(env, mailbox.certificate_setting, describe), describe
        )
    fingerprint = hashlib.sha256(repr(credential).encode()).hexdigest()[:16]
    key = "|".join(
        (
            mailbox.auth,
            mailbox.tenant_id,
            mailbox.client_id or "",
            mailbox.login_endpoint,
            scope,
            fingerprint,
        )
    )
    with _providers_lock:
        found = _providers.get(key)
        if found is None:
            found = (
                MsalProvider(mailbox, scope, credential, describe)
                if credential is not None
                else AzureIdentityProvider(mailbox, scope, describe)
            )
            _providers[key] = found
        return found


def _setting(env: Any, name: str | None, describe: str) -> str:
    value = env.get(name) if name else None
    if not value:
        raise GraphAuthError(f"{describe}: app setting {name} is not set")
    return str(value)


def certificate_credential(pem: str, describe: str) -> dict[str, str]:
    """msal's certificate credential from a PEM holding the private key and the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    start = pem.find("-----BEGIN CERTIFICATE-----")
    if start < 0 or "PRIVATE KEY-----" not in pem:
        raise GraphAuthError(f"{describe}: the certificate setting needs a PEM key and certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem[start:].encode())
    except ValueError as exc:
        raise GraphAuthError(f"{describe}: the certificate is not valid PEM") from exc
    return {
        "private_key": pem,
        "thumbprint": cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 (Entra's id)
    }
