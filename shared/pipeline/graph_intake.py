"""Graph's webhook calls: answer fast, keep everything that is genuine, drop the rest.

Graph waits 3 seconds for an answer and counts slow ones against the endpoint, so this does the
least that is safe: check the size, parse the JSON, check each notification's clientState MAC
and that its subscription is ours, then persist what passed and answer 202. Only a failure to
persist answers 5xx, so Graph delivers again. Fetching happens later, from the queue. Parsing
and compressing are most of a POST's CPU on the worker's event loop, so they use orjson (about
twice as fast as `json` here) and ISA-L (`isal`, below).

What passed is compressed into one *blob* (a POST of 100 notifications is ~70 KB of JSON, ~6 KB
compressed). ISA-L (`isal`) writes zlib's format in about a quarter of zlib's time at the same
size, and readers need only the standard library's zlib. A queue message (at most 64 KiB in
base64, so 48 KiB of bytes) carries one or more blobs: `Z2`, then per blob its length in 4
bytes and the blob. The webhook writes the blobs of POSTs that arrive together in one message
(group commit), so one storage call persists several POSTs under load (`group_commit`). A POST
too large for one message is split into blobs that each fit.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson
from isal import isal_zlib

from ..sources.graph.clientstate import verified_nonce
from ..store.errors import ContractError
from ..store.queues import MAX_MESSAGE_BYTES
from .group_commit import GroupCommit

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024  # Graph batches a few hundred notifications at most
FORMAT = b"Z2"  # the queue message: this prefix, then framed blobs (each zlib JSON {"value": []})
FORMAT_V1 = b"Z1"  # earlier versions: the prefix and one zlib JSON, still read
MAX_MESSAGE = MAX_MESSAGE_BYTES // 4 * 3  # bytes before base64 (48 KiB: 64 KiB on the wire)
LENGTH = 4  # bytes of a blob's length prefix
MAX_BLOB = MAX_MESSAGE - len(FORMAT) - LENGTH


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


@dataclass(frozen=True)
class Checked:
    """A POST that passed: its genuine notifications as blobs to persist (none if all were
    dropped)."""

    blobs: list[bytes]
    notifications: int


def check(body: bytes, *, secret: bytes | None, known: Callable[[str], bool]) -> Answer | Checked:
    """The POST's answer if it is refused (413, 400, 503), else what to persist.
    `known(nonce)`: is this the nonce of one of our subscriptions (made or being made)?"""
    if len(body) > MAX_BODY:
        return Answer(413, f"body over {MAX_BODY} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
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
    if not kept:
        return Checked([], 0)
    # All genuine (the usual case): the body as posted, not serialised again.
    return Checked(blobs(kept, body if len(kept) == len(items) else None), len(kept))


async def persist(checked: Checked, submit: Callable[[bytes], Awaitable[None]]) -> Answer:
    """Write the blobs (`submit`, e.g. a group commit's), then 202; 503 if any write failed,
    so Graph delivers again."""
    try:
        for blob in checked.blobs:
            await submit(blob)
    except Exception as exc:
        log.error(
            "graph intake: could not persist %d notifications: %s", checked.notifications, exc
        )
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


def blobs(kept: list[object], payload: bytes | None = None) -> list[bytes]:
    """`kept` (whose JSON `{"value": kept}` is `payload`, if given) as compressed blobs of at
    most MAX_BLOB bytes: one, unless it is too large, then halves until each fits. Level 1 of
    0-3: the answer time is what Graph counts, and the size is far below the limit either way."""
    data = payload if payload is not None else orjson.dumps({"value": kept})
    blob = isal_zlib.compress(data, 1)
    if len(blob) <= MAX_BLOB:
        return [blob]
    if len(kept) == 1:
        # Graph's notifications are under 1 KB; this one cannot be stored, and refusing the
        # POST would have Graph deliver it again for 4 hours.
        log.error("graph intake: dropped a notification of %d bytes compressed", len(blob))
        return []
    half = len(kept) // 2
    return blobs(kept[:half]) + blobs(kept[half:])


def framed(blob: bytes) -> int:
    """What a blob adds to a message."""
    return LENGTH + len(blob)


def pack(parts: Sequence[bytes]) -> bytes:
    """One queue message of blobs (at most MAX_MESSAGE bytes if their `framed` sizes add up to
    MAX_MESSAGE - len(FORMAT))."""
    return FORMAT + b"".join(len(blob).to_bytes(LENGTH, "big") + blob for blob in parts)


def group_commit(send: Callable[[bytes], None]) -> GroupCommit:
    """Blobs of concurrent POSTs written together: `send(message)` gets as many as fit in one."""
    return GroupCommit(
        lambda parts: send(pack(parts)), limit=MAX_MESSAGE - len(FORMAT), size=framed
    )


def unpack(message: bytes) -> list[dict[str, object]]:
    """The notifications a queue message holds (what `persist` wrote), in order. Anything
    else raises ContractError: retrying cannot fix it."""
    if message.startswith(FORMAT_V1):
        parts = [message[len(FORMAT_V1) :]]
    elif message.startswith(FORMAT):
        parts, at = [], len(FORMAT)
        while at < len(message):
            size = int.from_bytes(message[at : at + LENGTH], "big")
            blob = message[at + LENGTH : at + LENGTH + size]
            if size == 0 or len(blob) != size:
                raise ContractError("graph notification batch: a frame is empty or truncated")
            parts.append(blob)
            at += LENGTH + size
    else:
        raise ContractError("not a graph notification batch")
    if not parts:
        raise ContractError("graph notification batch without notifications")
    out: list[dict[str, object]] = []
    for blob in parts:
        try:
            data = orjson.loads(zlib.decompress(blob))
        except (zlib.error, orjson.JSONDecodeError) as exc:
            raise ContractError(f"graph notification batch: a blob is unreadable: {exc}") from exc
        items = data.get("value") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ContractError('graph notification batch: a blob is not {"value": [...]}')
        out += [n for n in items if isinstance(n, dict)]
    return out
