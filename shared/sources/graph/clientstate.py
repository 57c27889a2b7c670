"""`clientState` for Graph subscriptions: `mf1.<nonce>.<HMAC-SHA256(secret, nonce)>`.

Graph echoes it on every notification. The nonce is random per subscription and stored with it;
the MAC proves the notification comes from a subscription we made, without storing anything
secret. Standard library only: the webhook imports this on its fast path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "mf1"


def new_nonce() -> str:
    return secrets.token_hex(12)


def _mac(secret: bytes, nonce: str) -> str:
    digest = hmac.new(secret, f"{PREFIX}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make(secret: bytes, nonce: str) -> str:
    return f"{PREFIX}.{nonce}.{_mac(secret, nonce)}"  # 72 characters; Graph allows 128


def verified_nonce(secret: bytes, client_state: object) -> str | None:
    """The nonce if `client_state` carries a valid MAC (compared in constant time), else None."""
    if not isinstance(client_state, str) or len(client_state) > 128:
        return None
    prefix, _, rest = client_state.partition(".")
    nonce, _, mac = rest.partition(".")
    if prefix != PREFIX or not nonce or not mac:
        return None
    return nonce if hmac.compare_digest(mac.encode(), _mac(secret, nonce).encode()) else None
