"""Access tokens for IMAP XOAUTH2 that a person, not an app, holds: Microsoft 365 delegated
(device-code sign-in) and Gmail (a refresh token).

Delegated sign-in happens once, from the command line (`mailfiler auth imap --mailbox NAME`):
msal's device-code flow, then msal's token cache (the refresh token in it) is encrypted with
the key in app setting `MAILFILER_TOKEN_KEY` (Fernet; several keys, comma-separated, rotate:
the first encrypts, all decrypt) and kept in table `ImapState` (PK the mailbox, RK `oauth`).
It is never written in plain text. Each poll redeems it silently; a refresh writes the new
cache back. The row also notes when the sign-in and the last refresh happened, which
`/api/health` turns into warnings before the refresh token lapses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from ...core.config import GmailOAuth, ImapMailbox, ImapOAuth
from ...core.errors import MailfilerError
from ...store import imap_tokens
from ...store.stores import IMAP_STATE, Stores
from ..graph.auth import KNOWN_AUTHORITIES

log = logging.getLogger(__name__)
TOKEN_KEY_SETTING = "MAILFILER_TOKEN_KEY"  # noqa: S105 (the setting's name)
REFRESH_MARGIN = 300  # seconds before expiry a cached access token is replaced
# Microsoft: a refresh token unused for 90 days lapses; Google: one unused for six months.
IDLE_LIFETIME = {"microsoft": timedelta(days=90), "google": timedelta(days=182)}
WARN_BEFORE = timedelta(days=30)


class ImapAuthError(RuntimeError, MailfilerError):
    """No token: not signed in, a revoked or lapsed grant, a missing key or setting."""


# -- the encrypted cache --------------------------------------------------------------------


def _vault(environ: Any = None) -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    env = os.environ if environ is None else environ
    value = str(env.get(TOKEN_KEY_SETTING) or "")
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if not keys:
        raise ImapAuthError(
            f"app setting {TOKEN_KEY_SETTING} is not set (a Fernet key: "
            "`mailfiler auth new-key` makes one); token caches are never stored unencrypted"
        )
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except ValueError as exc:
        raise ImapAuthError(f"app setting {TOKEN_KEY_SETTING}: not a Fernet key ({exc})") from exc


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _load(stores: Stores, mailbox: str) -> dict[str, Any] | None:
    return imap_tokens.load(stores.table(IMAP_STATE), mailbox)


def _save(stores: Stores, mailbox: str, cache: str | None, **fields: Any) -> None:
    if cache is not None:
        fields["Cache"] = _vault().encrypt(cache.encode()).decode()
    imap_tokens.save(stores.table(IMAP_STATE), mailbox, **fields)


# -- Microsoft delegated (device code) -------------------------------------------------------


def _public_app(oauth: ImapOAuth, cache: Any) -> Any:
    import msal  # only mailboxes that use it pay for msal

    login = oauth.login_endpoint.rstrip("/")
    return msal.PublicClientApplication(
        oauth.client_id,
        authority=f"{login}/{oauth.tenant_id}",
        token_cache=cache,
        instance_discovery=urlparse(login).hostname in KNOWN_AUTHORITIES,
    )


def sign_in(
    mailbox: ImapMailbox, stores: Stores, now: datetime, show: Callable[[str], object]
) -> str:
    """The device-code flow: `show` gets Entra's instructions (a URL and a code) for the
    person, then this waits until they signed in. Returns the account signed in."""
    import msal

    oauth = _microsoft(mailbox)
    if oauth.auth != "device_code":
        raise ImapAuthError(
            f"mailbox {mailbox.name!r}: oauth.auth is {oauth.auth}, not device_code"
        )
    _vault()  # fail before the person signs in, not after
    cache = msal.SerializableTokenCache()
    app = _public_app(oauth, cache)
    flow = app.initiate_device_flow(scopes=[oauth.token_scope])
    if "user_code" not in flow:
        raise ImapAuthError(f"mailbox {mailbox.name!r}: {_entra_error(flow)}")
    show(str(flow["message"]))
    result = app.acquire_token_by_device_flow(flow)
    if "access_token" not in result:
        raise ImapAuthError(f"mailbox {mailbox.name!r}: sign-in failed: {_entra_error(result)}")
    account = str((result.get("id_token_claims") or {}).get("preferred_username") or "")
    if account and account.lower() != mailbox.username.lower():
        # XOAUTH2 names the mailbox; a token of another user would open nothing (or the wrong
        # mailbox, for a delegate): better to say so now.
        log.warning(
            "imap: mailbox=%s signed in as %s, username is %s",
            mailbox.name,
            account,
            mailbox.username,
        )
    _save(
        stores,
        mailbox.name,
        cache.serialize(),
        Account=account,
        SignedInAt=now,
        RefreshedAt=now,
        ExpiresAt=now + timedelta(seconds=int(result.get("expires_in", 3599))),
    )
    _tokens.drop(_cache_key(mailbox))
    return account


def delegated_token(mailbox: ImapMailbox, stores: Stores, now: datetime) -> str:
    """An access token from the stored cache (msal refreshes it when needed)."""
    import msal

    oauth = _microsoft(mailbox)
    cached = _tokens.get(_cache_key(mailbox))
    if cached:
        return cached
    row = _load(stores, mailbox.name)
    if not row or not row.get("Cache"):
        raise ImapAuthError(
            f"mailbox {mailbox.name!r} is not signed in: run mailfiler auth imap --mailbox "
            f"{mailbox.name}"
        )
    from cryptography.fernet import InvalidToken

    try:
        plain = _vault().decrypt(str(row["Cache"]).encode()).decode()
    except InvalidToken as exc:
        raise ImapAuthError(
            f"mailbox {mailbox.name!r}: the token cache does not decrypt with "
            f"{TOKEN_KEY_SETTING} (rotated without keeping the old key?); sign in again"
        ) from exc
    cache = msal.SerializableTokenCache()
    cache.deserialize(plain)
    app = _public_app(oauth, cache)
    accounts = (
        app.get_accounts(username=str(row.get("Account") or "") or None) or app.get_accounts()
    )
    refused = _tokens.refused(_cache_key(mailbox))  # the server said no to the last one
    result = (
        app.acquire_token_silent_with_error(
            [oauth.token_scope], account=accounts[0], force_refresh=refused
        )
        if accounts
        else None
    )
    if not result or "access_token" not in result:
        why = _entra_error(result) if result else "no account in the token cache"
        raise ImapAuthError(
            f"mailbox {mailbox.name!r}: the sign-in no longer works ({why}); run mailfiler auth "
            f"imap --mailbox {mailbox.name}"
        )
    expires = now + timedelta(seconds=int(result.get("expires_in", 3599)))
    if cache.has_state_changed:  # msal redeemed the refresh token: keep the new one
        _save(stores, mailbox.name, cache.serialize(), RefreshedAt=now, ExpiresAt=expires)
    token = str(result["access_token"])
    _tokens.put(_cache_key(mailbox), token, int(result.get("expires_in", 3599)))
    return token


# -- Gmail (refresh token) ------------------------------------------------------------------


def google_token(mailbox: ImapMailbox, stores: Stores, now: datetime) -> str:
    """An access token for Gmail from the configured refresh token, through google-auth."""
    oauth = mailbox.oauth
    assert isinstance(oauth, GmailOAuth)
    cached = _tokens.get(_cache_key(mailbox))
    if cached:
        return cached
    from google.auth.exceptions import RefreshError, TransportError
    from google.auth.transport.requests import Request
    from google.oauth2.credentials import Credentials

    secret = os.environ.get(oauth.client_secret_setting)
    refresh = os.environ.get(oauth.refresh_token_setting)
    for name, value in (
        (oauth.client_secret_setting, secret),
        (oauth.refresh_token_setting, refresh),
    ):
        if not value:
            raise ImapAuthError(f"mailbox {mailbox.name!r}: app setting {name} is not set")
    credentials = Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=refresh,
        token_uri=oauth.token_endpoint,
        client_id=oauth.client_id,
        client_secret=secret,
        scopes=["https://mail.google.com/"],
    )
    try:
        credentials.refresh(Request())  # type: ignore[no-untyped-call]
    except RefreshError as exc:
        raise ImapAuthError(
            f"mailbox {mailbox.name!r}: Google refused the refresh token ({_first(exc)}); issue "
            f"a new one and put it in {oauth.refresh_token_setting}"
        ) from exc
    except TransportError as exc:
        raise ImapAuthError(f"mailbox {mailbox.name!r}: {_first(exc)}") from exc
    lifetime = 3599
    if credentials.expiry is not None:
        # google-auth keeps expiry as naive UTC
        left = credentials.expiry - datetime.now(UTC).replace(tzinfo=None)
        lifetime = max(60, int(left.total_seconds()))
    _save(stores, mailbox.name, None, RefreshedAt=now, ExpiresAt=now + timedelta(seconds=lifetime))
    token = str(credentials.token)
    _tokens.put(_cache_key(mailbox), token, lifetime)
    return token


# -- health ----------------------------------------------------------------------------------


def credential_warnings(mailbox: ImapMailbox, stores: Stores, now: datetime) -> list[str]:
    """What will fail soon, said while there is time: not signed in, or a refresh token about
    to lapse for want of use (a mailbox that has been failing or disabled for weeks)."""
    oauth = mailbox.oauth
    if mailbox.auth != "xoauth2" or oauth is None:
        return []
    delegated = isinstance(oauth, ImapOAuth) and oauth.auth == "device_code"
    if not (delegated or isinstance(oauth, GmailOAuth)):
        return []
    row = _load(stores, mailbox.name) or {}
    if delegated and not row.get("Cache"):
        return [f"not signed in: run mailfiler auth imap --mailbox {mailbox.name}"]
    used = row.get("RefreshedAt")
    if not isinstance(used, datetime):
        return []
    lapses = used + IDLE_LIFETIME[oauth.provider]
    if now >= lapses:
        return [f"the refresh token has not been used since {used:%Y-%m-%d} and has lapsed"]
    if now >= lapses - WARN_BEFORE:
        return [
            f"the refresh token has not been used since {used:%Y-%m-%d}; it lapses on "
            f"{lapses:%Y-%m-%d} unless a poll succeeds before"
        ]
    return []


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    expires_at: float


class _TokenCache:
    """Access tokens per mailbox for this process (a poll a minute must not sign in anew)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._refused: set[str] = set()

    def get(self, mailbox: str) -> str | None:
        with self._lock:
            found = self._tokens.get(mailbox)
            return found.value if found and found.expires_at > time.time() else None

    def put(self, mailbox: str, value: str, lifetime: int) -> None:
        with self._lock:
            self._tokens[mailbox] = _Token(value, time.time() + lifetime - REFRESH_MARGIN)
            self._refused.discard(mailbox)

    def drop(self, mailbox: str, *, refused: bool = False) -> None:
        with self._lock:
            self._tokens.pop(mailbox, None)
            if refused:
                self._refused.add(mailbox)

    def refused(self, mailbox: str) -> bool:
        with self._lock:
            return mailbox in self._refused


_tokens = _TokenCache()


def forget_token(mailbox: ImapMailbox) -> None:
    """The server refused the access token: drop it, and have the next one newly issued
    (msal's cache would otherwise hand out the same token until it expires)."""
    _tokens.drop(_cache_key(mailbox), refused=True)


def _cache_key(mailbox: ImapMailbox) -> str:
    return f"{mailbox.name}|{mailbox.username}|{mailbox.oauth!r}"


def _microsoft(mailbox: ImapMailbox) -> ImapOAuth:
    if not isinstance(mailbox.oauth, ImapOAuth):
        raise ImapAuthError(f"mailbox {mailbox.name!r} has no Microsoft oauth block")
    return mailbox.oauth


def _entra_error(result: dict[str, Any]) -> str:
    code = result.get("error", "unknown_error")
    detail = str(result.get("error_description", "")).splitlines()
    return f"{code}: {detail[0][:300]}" if detail else str(code)


def _first(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__
