"""Failures that retrying will not fix end in `<queue>-poison` with their reason.

The Functions host moves a message to the poison queue after `maxDequeueCount` failures, but
without saying why. We do it ourselves on the last attempt, and at once for a failure that the
same input will always meet again (a malformed contract, a write over an Azure limit, a plan
that cannot fit its queue message, a value a contract refuses, text that cannot be encoded),
so an operator sees the reason and can replay the message after a fix. If even that fails, the
exception propagates and the host's own poison handling still keeps the message.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from ..core.contracts import PoisonMessage
from ..core.plan_fit import PlanTooLarge
from ..store.errors import ContractError, StorageLimitError
from ..store.queues import decode
from ..store.stores import Stores, poison

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_MAX_DEQUEUE = 5
POISON_BODY = 40_000  # bytes of the body's JSON; with the reason, a poison message fits 48 KiB
# Failures that retrying cannot fix: the same message meets them on every attempt.
PERMANENT: tuple[type[Exception], ...] = (
    StorageLimitError,
    PlanTooLarge,
    ValidationError,
    UnicodeError,
    RecursionError,
)


def max_dequeue_count(host_json: Path | None = None) -> int:
    """host.json's `extensions.queues.maxDequeueCount`, the one setting both hosts obey."""
    path = host_json or Path(__file__).resolve().parents[2] / "host.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["extensions"]["queues"]["maxDequeueCount"])
    except (OSError, KeyError, ValueError, TypeError):
        return DEFAULT_MAX_DEQUEUE


def _blob_of(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("blob")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _body_fields(body: bytes) -> dict[str, object]:
    """The body as text when it is UTF-8, else as base64, so a replay sends the very bytes;
    compressed when it would not fit beside the rest of the poison message (JSON escapes make
    a body near the 64 KiB limit larger still)."""
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and len(json.dumps(text, ensure_ascii=False).encode()) <= POISON_BODY:
        return {"body": text}
    if text is None and (len(body) + 2) // 3 * 4 <= POISON_BODY:
        return {"body": base64.b64encode(body).decode("ascii"), "body_base64": True}
    packed = base64.b64encode(zlib.compress(body, 9)).decode("ascii")
    return {"body": packed, "body_base64": True, "body_zlib": True}


def _count_failure(stage: str, exc: BaseException) -> None:
    from ..telemetry import instruments

    metrics = instruments()
    if metrics is not None:
        metrics.failures.add(1, {"stage": stage, "reason": type(exc).__name__})


def run_guarded(
    stores: Stores,
    *,
    queue: str,
    stage: str,
    body: bytes,
    dequeue_count: int,
    now: Callable[[], datetime],
    handler: Callable[[bytes], T],
    max_dequeue: int = DEFAULT_MAX_DEQUEUE,
    on_poison: Callable[[bytes, str], object] | None = None,
) -> T | None:
    try:
        return handler(body)
    except ContractError as exc:
        reason = f"malformed: {exc}"
        _count_failure(stage, exc)
    except PERMANENT as exc:
        reason = f"cannot succeed: {type(exc).__name__}: {exc}"
        _count_failure(stage, exc)
    except Exception as exc:
        _count_failure(stage, exc)
        if dequeue_count < max_dequeue:
            log.warning("%s: attempt %d of %d failed: %s", stage, dequeue_count, max_dequeue, exc)
            raise
        reason = f"failed {dequeue_count} times; last error: {type(exc).__name__}: {exc}"
    send_to_poison(
        stores,
        queue=queue,
        stage=stage,
        body=body,
        reason=reason,
        dequeue_count=dequeue_count,
        now=now(),
    )
    if on_poison is not None:
        on_poison(body, reason)
    return None


def send_to_poison(
    stores: Stores,
    *,
    queue: str,
    stage: str,
    body: bytes,
    reason: str,
    dequeue_count: int,
    now: datetime,
) -> None:
    """`body` to `<queue>-poison` with the reason (also for a stage that gives up by its own
    count, e.g. retries it scheduled itself as new delayed messages)."""
    log.error("%s: to %s: %s", stage, poison(queue), reason)
    stores.queues.send(
        poison(queue),
        PoisonMessage(
            queue=queue,
            stage=stage,
            reason=reason[:2000],
            dequeue_count=dequeue_count,
            **_body_fields(body),
            blob=_blob_of(body),
            failed_at=now,
        ),
    )


# --- looking at and replaying poison queues (the CLI and the console) ---------------------------

PEEK_MAX = 32  # Queue Storage peeks at most 32 messages
REPLAY_LEASE_SECONDS = 300  # a received poison message stays invisible while it is replayed


def poison_entry(body: bytes) -> dict[str, Any]:
    """A poison message as shown; the host's own poison moves carry the raw original body."""
    try:
        failure = decode(body, PoisonMessage)
    except ContractError:
        return {
            "stage": None,
            "reason": "moved by the host without a reason (the original message)",
            "attempts": None,
            "failed_at": None,
            "blob": None,
            "body": body.decode("utf-8", "replace"),
        }
    return {
        "stage": failure.stage,
        "reason": failure.reason,
        "attempts": failure.dequeue_count,
        "failed_at": failure.failed_at.isoformat(),
        "blob": failure.blob,
        "body": replay_body(body).decode("utf-8", "replace") if failure.body_zlib else failure.body,
    }


def poison_entries(stores: Stores, queue: str, count: int = PEEK_MAX) -> list[dict[str, Any]]:
    """The first `count` messages of `queue`'s poison queue, as shown (peeked, not taken)."""
    return [poison_entry(body) for body in stores.queues.peek(poison(queue), min(count, PEEK_MAX))]


def replay_body(body: bytes) -> bytes:
    """What goes back to the queue: a PoisonMessage's original body, anything else as it is."""
    try:
        failure = decode(body, PoisonMessage)
    except ContractError:
        return body
    if failure.body_zlib:
        return zlib.decompress(base64.b64decode(failure.body))
    if failure.body_base64:
        return base64.b64decode(failure.body)
    return failure.body.encode("utf-8")


def replay(stores: Stores, queue: str, count: int | None) -> int:
    """Move up to `count` (None: all) poison messages back to `queue`; how many moved.

    Each is sent before it is deleted from the poison queue: a crash in between replays it twice,
    which the stages absorb, rather than losing it.
    """
    moved = 0
    seen: set[str] = set()
    while count is None or moved < count:
        want = PEEK_MAX if count is None else min(PEEK_MAX, count - moved)
        batch = [
            m
            for m in stores.queues.receive(
                poison(queue), max_messages=want, visibility_timeout=REPLAY_LEASE_SECONDS
            )
            if m.id not in seen
        ]
        if not batch:
            break
        for message in batch:
            seen.add(message.id)
            stores.queues.send_bytes(queue, replay_body(message.body))
            stores.queues.delete(poison(queue), message)
            moved += 1
    return moved
