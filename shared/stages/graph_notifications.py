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

import asyncio
import json
import logging
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal

import orjson
from isal import isal_zlib

from ..core.config import GraphMailbox
from ..core.errors import MailfilerError
from ..services.context import AppContext
from ..services.group_commit import GroupCommit
from ..services.mailboxes import request_resync
from ..sources.graph.clientstate import verified_nonce
from ..store.errors import ContractError
from ..store.names import GRAPH_FETCH, GRAPH_NOTIFICATIONS, GRAPH_STATE
from ..store.queues import MAX_MESSAGE_BYTES, Queues

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024  # Graph batches a few hundred notifications at most
FORMAT = b"Z2"  # the queue message: this prefix, then framed blobs (each zlib JSON {"value": []})
FORMAT_V1 = b"Z1"  # earlier versions: the prefix and one zlib JSON, still read
MAX_MESSAGE = MAX_MESSAGE_BYTES // 4 * 3  # bytes before base64 (48 KiB: 64 KiB on the wire)
LENGTH = 4  # bytes of a blob's length prefix
MAX_BLOB = MAX_MESSAGE - len(FORMAT) - LENGTH


# What the webhook answers, in our words; functions/graph.py maps each to its HTTP status.
Outcome = Literal["accepted", "too_large", "malformed", "unavailable"]


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    text: str


@dataclass(frozen=True)
class Checked:
    """A POST that passed: its genuine notifications as blobs to persist (none if all were
    dropped)."""

    blobs: list[bytes]
    notifications: int


def check(body: bytes, *, secret: bytes | None, known: Callable[[str], bool]) -> Answer | Checked:
    """The POST's answer if it is refused (too large, malformed, or we cannot check it),
    else what to persist.
    `known(nonce)`: is this the nonce of one of our subscriptions (made or being made)?"""
    if len(body) > MAX_BODY:
        return Answer("too_large", f"body over {MAX_BODY} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Answer("malformed", "body is not JSON")
    items = data.get("value") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return Answer("malformed", "expected a JSON object with a 'value' list")
    if secret is None:
        # Without the secret nothing can be checked; keeping it would let forgeries in.
        log.error("graph intake: the client state secret is not configured; refusing")
        return Answer("unavailable", "not configured")
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
    """Write the blobs (`submit`, e.g. a group commit's), then accepted; unavailable if any
    write failed, so Graph delivers again."""
    try:
        for blob in checked.blobs:
            await submit(blob)
    except Exception as exc:
        log.error(
            "graph intake: could not persist %d notifications: %s", checked.notifications, exc
        )
        return Answer("unavailable", "could not persist; deliver again")
    return Answer("accepted", "")


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


def process_notifications(ctx: AppContext, body: bytes, now: datetime) -> dict[str, int]:
    """One webhook POST's notifications: lifecycle events handled, changes queued as fetches."""
    from ..sources.graph.state import secret
    from ..store import subscriptions as subscription_rows

    key = secret(ctx.config)
    if key is None:
        raise RuntimeError("graph: the client state secret is not set")
    counts = {"fetch": 0, "lifecycle": 0, "dropped": 0}
    jobs: dict[tuple[str, str, str], dict[str, Any]] = {}
    # A POST mostly carries one subscription's notifications: check and look up each
    # clientState once, not once per notification.
    rows: dict[object, dict[str, Any] | None] = {}
    for item in unpack(body):
        state = item.get("clientState")
        if state not in rows:
            nonce = verified_nonce(key, state)
            rows[state] = (
                subscription_rows.nonce(ctx.stores.table(GRAPH_STATE), nonce) if nonce else None
            )
        row = rows[state]
        mailbox = ctx.config.mailbox(str(row["Mailbox"])) if row else None
        if row is None or not isinstance(mailbox, GraphMailbox):
            counts["dropped"] += 1
            continue
        event = item.get("lifecycleEvent")
        if event:
            counts["lifecycle"] += 1
            _lifecycle(ctx, mailbox, str(event), str(item.get("subscriptionId", "")), now)
            continue
        data = item.get("resourceData") or {}
        item_id = data.get("id") if isinstance(data, dict) else None
        if not item_id:
            counts["dropped"] += 1
            continue
        kind = "event" if row.get("Kind") == "events" else "message"
        change = str(item.get("changeType", "updated"))
        named = data.get("@odata.etag") if isinstance(data, dict) else None
        etag = named if isinstance(named, str) and len(named) <= 512 else None
        # A created and an updated of one message in one POST: one fetch reads both. The job
        # names every version announced (our PATCH and our move often come together): if all
        # of them are ours, nothing is fetched. One without a version means a fetch.
        job = jobs.setdefault((mailbox.name, kind, str(item_id)), {"change": change, "etags": []})
        etags = job["etags"]
        if etag is None or etags is None or len(etags) >= MAX_ETAGS:
            job["etags"] = None
        elif etag not in etags:
            etags.append(etag)
    for (mailbox_name, kind, item_id), job in jobs.items():
        ctx.stores.queues.send_bytes(
            GRAPH_FETCH,
            json.dumps(
                {"v": 1, "mailbox": mailbox_name, "kind": kind, "id": item_id, **job}
            ).encode(),
        )
        counts["fetch"] += 1
    return counts


def _lifecycle(
    ctx: AppContext, mailbox: GraphMailbox, event: str, subscription_id: str, now: datetime
) -> None:
    from ..sources.graph import subscriptions

    log.info("graph: mailbox=%s lifecycle %s", mailbox.name, event)
    if event == "reauthorizationRequired":
        subscriptions.reauthorize(mailbox, subscription_id)
        return
    if event == "subscriptionRemoved":
        subscriptions.maintain(
            ctx.config, ctx.stores, now, only=mailbox.name, recreate=[subscription_id]
        )
    # subscriptionRemoved and missed: notifications were lost; delta catches up.
    request_resync(ctx, mailbox.name, now, reason=event)


MAX_ETAGS = 8  # versions a fetch job names; more (a busy message) and it simply fetches


STAGE = "graph-notifications"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `graph-notifications` (called by its trigger: functions/stage.py)."""
    return process_notifications(ctx, body, now)


KNOWN_FOR = 600.0  # seconds a known subscription nonce is trusted without a read


UNKNOWN_FOR = 30.0


_nonces: dict[str, tuple[bool, float]] = {}


_nonces_lock = threading.Lock()


_commits: tuple[Queues, asyncio.AbstractEventLoop, GroupCommit] | None = None


class _MustBlock(MailfilerError):
    """Checking this POST needs a table read or a first import: not on the event loop."""


def _known(ctx: AppContext, nonce: str, *, may_block: bool) -> bool:
    """Is this one of our subscriptions? Cached: a warm worker answers without a read."""
    clock = time.monotonic()
    with _nonces_lock:
        cached = _nonces.get(nonce)
    if cached is not None and cached[1] > clock:
        return cached[0]
    if not may_block:
        raise _MustBlock
    # Imported here, past the event loop's check: a first import blocks.
    from ..store import subscriptions as subscription_rows

    found = subscription_rows.nonce(ctx.stores.table(GRAPH_STATE), nonce) is not None
    with _nonces_lock:
        _nonces[nonce] = (found, clock + (KNOWN_FOR if found else UNKNOWN_FOR))
    return found


def _committer(queues: Queues) -> GroupCommit:
    """The worker's group commit onto the notification queue (one per event loop): POSTs that
    arrive while one is being persisted share the next storage call."""
    from ..stages.graph_notifications import group_commit

    global _commits
    loop = asyncio.get_running_loop()
    if _commits is None or _commits[0] is not queues or _commits[1] is not loop:
        commit = group_commit(lambda message: queues.send_bytes(GRAPH_NOTIFICATIONS, message))
        _commits = (queues, loop, commit)
    return _commits[2]


def _check(body: bytes, *, may_block: bool) -> tuple[Answer | Checked, Queues]:
    """Parse and verify a POST. Without `may_block` (on the event loop) it raises _MustBlock
    where it would wait: before the context is built and for a nonce not seen lately (a table
    read). A forged clientState fails its MAC before any read. The app's modules are loaded
    already (functions/graph.py loads them on a thread before the first call)."""
    from ..services.context import built_context, get_context
    from ..sources.graph.state import secret

    ctx = get_context(ensure=False) if may_block else built_context()
    if ctx is None:
        raise _MustBlock
    checked = check(
        body,
        secret=secret(ctx.config),
        known=lambda nonce: _known(ctx, nonce, may_block=may_block),
    )
    return checked, ctx.stores.queues


async def receive(body: bytes) -> Answer:
    """One webhook POST (after the validation handshake and the first load): check it and
    persist what passed."""
    try:
        # On the loop: a thread hop per POST costs more than the check, and the group's
        # write, on its own thread, would queue behind them. Where it would block it starts
        # over on a thread: the first POST, and once per subscription every 10 minutes.
        checked, queues = _check(body, may_block=False)
    except _MustBlock:
        loop = asyncio.get_running_loop()
        checked, queues = await loop.run_in_executor(None, partial(_check, body, may_block=True))
    if isinstance(checked, Answer):
        return checked
    return await persist(checked, _committer(queues).submit)
