"""Who may use the console, and the CSRF guard on every change it makes.

Locally (`mailfiler run`) the console answers only callers on this machine: the local host puts
the connection's peer address in PEER_HEADER (replacing any a caller sent), and a request from
another address is refused, whatever its Host header says. In Azure the console answers only
behind App Service Authentication ("Easy Auth"), which signs the user in with Microsoft Entra ID
and hands the app the principal in X-MS-CLIENT-PRINCIPAL (stripping any copy a caller sent);
without it on, the console refuses everyone. `principal` is the one place that reads either.

Every state-changing request must come from our own page: its Origin must be this host, and
its form must carry `csrf_token(principal)`, an HMAC keyed by app setting CSRF_SETTING (a page
from another site can neither read it nor compute it). In Azure the setting is a Key Vault
reference (infra/), the same on every instance, so a form one instance served is taken by
any other; without it (locally: one process) each process keys its tokens with its own random
key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from ..core.errors import MailfilerError

log = logging.getLogger(__name__)
PEER_HEADER = "x-mailfiler-peer"
CSRF_SETTING = "MAILFILER_CONSOLE_CSRF_SECRET"
MIN_CSRF_SECRET = 32  # characters: `openssl rand -hex 32` gives 64
_KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
READ, AGENT, ADMIN = "Mailfiler.Read", "Mailfiler.Agent", "Mailfiler.Admin"
# Each role includes those before it.
_RANKS = {READ: 1, AGENT: 2, ADMIN: 3}
_SECRET = secrets.token_bytes(32)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_PRINCIPAL = 16 * 1024  # bytes of the base64 header; Entra's are a few KiB


class Refused(MailfilerError):
    """The request may not be served: an HTTP status and a message in plain words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    source: str  # "local" (this machine, no sign-in) or "entra" (App Service Authentication)

    def can(self, role: str) -> bool:
        need = _RANKS[role]
        return any(_RANKS.get(r, 0) >= need for r in self.roles)


def easy_auth_enabled() -> bool:
    """App Service sets WEBSITE_AUTH_ENABLED=True when App Service Authentication is on."""
    return os.environ.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true"


def in_azure() -> bool:
    return bool(os.environ.get("WEBSITE_INSTANCE_ID"))


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _from_easy_auth(headers: Mapping[str, str]) -> Principal:
    """The signed-in user from X-MS-CLIENT-PRINCIPAL: base64 JSON with `claims` (`typ`/`val`),
    `name_typ` and `role_typ` naming the claims that hold the name and the app roles."""
    encoded = headers.get("x-ms-client-principal", "")
    if not encoded:
        raise Refused(401, "sign in first (App Service Authentication sent no principal)")
    if len(encoded) > MAX_PRINCIPAL:
        raise Refused(400, "the principal header is too large")
    try:
        data = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        raise Refused(400, "the principal header is not base64 JSON") from None
    claims = data.get("claims") if isinstance(data, dict) else None
    if not isinstance(claims, list):
        raise Refused(400, "the principal header has no claims")
    name_typ = data.get("name_typ") or "name"
    role_typ = data.get("role_typ") or "roles"
    names, roles = [], set()
    for claim in claims:
        if not isinstance(claim, dict) or not isinstance(claim.get("val"), str):
            continue
        if claim.get("typ") in (role_typ, "roles"):
            roles.add(claim["val"])
        elif claim.get("typ") == name_typ:
            names.append(claim["val"])
    name = names[0] if names else headers.get("x-ms-client-principal-name", "")
    known = frozenset(roles & set(_RANKS))
    if not known:
        raise Refused(403, f"your account has none of the app roles {', '.join(_RANKS)}")
    return Principal(_UNPRINTABLE.sub("?", name)[:200] or "unnamed", known, "entra")


def principal(headers: Mapping[str, str]) -> Principal:
    """Who is asking (headers with lowercased names), or Refused."""
    if easy_auth_enabled():
        return _from_easy_auth(headers)
    if in_azure():
        raise Refused(
            403, "the console needs App Service Authentication (Microsoft Entra ID) in Azure"
        )
    peer = headers.get(PEER_HEADER)
    if peer is None or not _loopback(peer):
        raise Refused(403, "the console answers only on this machine (127.0.0.1)")
    return Principal("local user", frozenset(_RANKS), "local")


@cache
def _csrf_key(setting: str) -> bytes:
    """The tokens' key from the setting's value; this process's own key when the value is
    missing, too short, or a Key Vault reference the platform could not resolve (its text is
    public, never a key)."""
    if len(setting) >= MIN_CSRF_SECRET and not setting.startswith(_KEY_VAULT_REFERENCE):
        return hashlib.sha256(
            b"mailfiler-console-csrf\x00" + setting.encode("utf-8", "surrogateescape")
        ).digest()
    if setting or in_azure():
        problem = "unresolved or shorter than 32 characters" if setting else "not set"
        log.warning(
            "console: app setting %s is %s: each instance keys its own CSRF tokens, so a form "
            "may be refused by another instance",
            CSRF_SETTING,
            problem,
        )
    return _SECRET


def csrf_token(who: Principal) -> str:
    key = _csrf_key(os.environ.get(CSRF_SETTING, ""))
    mac = hmac.new(key, f"csrf\x00{who.source}\x00{who.name}".encode(), hashlib.sha256)
    return mac.hexdigest()


def check_change(headers: Mapping[str, str], token: str | None, who: Principal, role: str) -> None:
    """A state-changing request: from our own origin, with our token, by someone allowed to."""
    host = headers.get("host", "").strip().lower()
    scheme = "https" if who.source == "entra" else "http"
    origin = headers.get("origin", "").strip().lower()
    if not host or origin != f"{scheme}://{host}":
        raise Refused(403, "this change did not come from a console page (Origin)")
    if not token or not hmac.compare_digest(token.encode(), csrf_token(who).encode()):
        raise Refused(403, "this form has expired or was not ours; reload the page (CSRF token)")
    if not who.can(role):
        raise Refused(403, f"this needs the role {role}")
