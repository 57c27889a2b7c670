"""The clientState secret: standard library only, since the webhook's fast path reads it. (The
subscription and nonce rows in `GraphState`: store/subscriptions.py.)
"""

from __future__ import annotations

import hashlib
import hmac
import os

from ...core.config import Config


def secret(config: Config) -> bytes | None:
    value = os.environ.get(config.graph.client_state_secret_setting)
    return value.encode() if value else None


def secret_id(key: bytes | None) -> str:
    """Which client state secret made a subscription (not the secret): a rotated secret
    means new subscriptions, since Graph keeps echoing the old clientState."""
    if key is None:
        return ""
    return hmac.new(key, b"mailfiler secret id", hashlib.sha256).hexdigest()[:16]
