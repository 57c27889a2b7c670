"""HMAC-signed Message-IDs, so a reply can name its record and a forged reference cannot.

Mail Mailfiler sends carries `Message-ID: <mf.<type>.<record key>.<nonce>.<signature>@<domain>>`
and the header `X-Mailfiler-Ref: <type>.<record key>.<signature>`. Replies quote the id in
In-Reply-To/References; checking the signature (with any of the configured keys, so keys can be
rotated) proves that Mailfiler minted it for that record. Signatures are 80 bits of
HMAC-SHA256: enough that guessing one is hopeless, short enough for a Message-ID.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from .contracts import RecordRef

REF_HEADER = "X-Mailfiler-Ref"
_SIG_HEX = 20
_ID = re.compile(
    r"^mf\.(?P<type>[a-z0-9][a-z0-9_-]{0,62})\.(?P<key>[0-9a-f]{8,64})\.(?P<nonce>[0-9a-z]{1,32})"
    rf"\.(?P<sig>[0-9a-f]{{{_SIG_HEX}}})@"
)
_REF = re.compile(
    rf"^(?P<type>[a-z0-9][a-z0-9_-]{{0,62}})\.(?P<key>[0-9a-f]{{8,64}})\.(?P<sig>[0-9a-f]{{{_SIG_HEX}}})$"
)


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:_SIG_HEX]


def signed_message_id(record: RecordRef, nonce: str, key: bytes, domain: str) -> str:
    """A Message-ID (without angle brackets) that names `record`, signed with `key`."""
    body = f"{record.type}.{record.key}.{nonce}"
    return f"mf.{body}.{_sign(key, body)}@{domain}"


def signed_ref_header(record: RecordRef, key: bytes) -> str:
    body = f"{record.type}.{record.key}"
    return f"{body}.{_sign(key, body)}"


def _valid(keys: Sequence[bytes], body: str, signature: str) -> bool:
    return any(hmac.compare_digest(_sign(k, body), signature) for k in keys)


def verify_message_id(message_id: str, keys: Sequence[bytes]) -> RecordRef | None:
    """The record a Message-ID names, if Mailfiler signed it with one of `keys`; else None."""
    match = _ID.match(message_id)
    if match is None or not keys:
        return None
    body = f"{match['type']}.{match['key']}.{match['nonce']}"
    if not _valid(keys, body, match["sig"]):
        return None
    return RecordRef(type=match["type"], key=match["key"])


def verify_ref_header(value: str, keys: Sequence[bytes]) -> RecordRef | None:
    match = _REF.match(value.strip())
    if match is None or not keys:
        return None
    if not _valid(keys, f"{match['type']}.{match['key']}", match["sig"]):
        return None
    return RecordRef(type=match["type"], key=match["key"])


def looks_signed(message_id: str) -> bool:
    """Has our shape, signed or not: a forged one is worth a reason in the trail."""
    return message_id.startswith("mf.") and _ID.match(message_id) is not None
