"""Graph's webhook calls: answer fast, keep everything that is genuine, drop the rest.

Graph waits 3 seconds for an answer and counts slow ones against the endpoint, so this does the
least that is safe: check the size, parse the JSON, check each notification's clientState MAC
and that its subscription is ours, then persist what passed in ONE queue message (compressed:
a POST of 100 notifications is ~70 KB of JSON, a queue message at most 64 KiB) and answer 202.
Only a failure to persist answers 5xx, so Graph delivers again. Fetching happens later, from
the queue. Standard library only, apart from what the caller passes in.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ..sources.graph.clientstate import verified_nonce

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024  # Graph batches a few hundred notifications at most
FORMAT = b"Z1"  # the queue message: this prefix, then zlib-compressed JSON {"value": [...]}


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


def accept(
    body: bytes,
    *,
    secret: bytes | None,
    known: Callable[[str], bool],
    persist: Callable[[bytes], None],
) -> Answer:
    """`known(nonce)`: is this the nonce of one of our subscriptions (made or being made)?"""
    if len(body) > MAX_BODY:
        return Answer(413, f"body over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        return Answer(400, "body is not JSON")
    items = data.get("value") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return Answer(400, "expected a JSON object with a 'value' list")
    if secret is None:
        # Without the secret nothing can be checked; keeping it would let forgeries in.
        log.error("graph intake: the client state secret is not configured; refusing")
        return Answer(503, "not configured")
    verdicts: dict[str, bool] = {}  # a POST mostly repeats one subscription's clientState
    kept = [n for n in items if _genuine(n, secret, known, verdicts)]
    if len(kept) < len(items):
        log.warning(
            "graph intake: dropped %d of %d notifications", len(items) - len(kept), len(items)
        )
    if kept:
        # All genuine (the usual case): the body as posted, not serialised again. Level 1: the
        # size is far below the limit either way, and the answer time is what Graph counts.
        payload = body if len(kept) == len(items) else json.dumps({"value": kept}).encode()
        message = FORMAT + zlib.compress(payload, 1)
        try:
            persist(message)
        except Exception as exc:
            log.error("graph intake: could not persist %d notifications: %s", len(kept), exc)
            return Answer(503, "could not persist; deliver again")
    return Answer(202, "")


def _genuine(
    item: object, secret: bytes, known: Callable[[str], bool], verdicts: dict[str, bool]
) -> bool:
    if not isinstance(item, dict) or not isinstance(item.get("subscriptionId"), str):
        return False
    state = item.get("clientState")
    if not isinstance(state, str):
        return False
    verdict = verdicts.get(state)
    if verdict is None:
        nonce = verified_nonce(secret, state)
        verdict = verdicts[state] = nonce is not None and known(nonce)
    return verdict


def unpack(message: bytes) -> list[dict[str, object]]:
    """The notifications a queue message holds (what `accept` persisted)."""
    if not message.startswith(FORMAT):
        raise ValueError("not a graph notification batch")
    data = json.loads(zlib.decompress(message[len(FORMAT) :]))
    return [n for n in data.get("value", []) if isinstance(n, dict)]
