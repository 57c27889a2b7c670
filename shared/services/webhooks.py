"""Webhook deliveries as operators see them: the `Delivery` a queue message carries, and the dead-
lettered ones (table EventDeliveries) listed and replayed."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..core.contracts import Event
from ..store import delivery_log
from ..store.queues import Queues, decode
from ..store.stores import DELIVERIES as DELIVERY_QUEUE_NAME
from ..store.stores import DELIVERY_LOG, Stores, poison
from ..store.tables import Entity

DELIVERY_QUEUE = DELIVERY_QUEUE_NAME


class Delivery(BaseModel):
    """Queue `deliveries`: one event for one webhook, and which attempt this is (from 1)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1
    event: Event
    webhook: str
    attempt: int = 1


def ensure_queues(stores: Stores, *names: str | None) -> None:
    """Create `deliveries` (and its poison queue) and `names`, once per process and account:
    Stores.ensure does not know them, and infra may not declare an optional consumer queue."""
    wanted = {DELIVERY_QUEUE, poison(DELIVERY_QUEUE), *(n for n in names if n)}
    with _ensure_lock:
        done = _ensured.setdefault(stores.queues, set())
        for name in sorted(wanted - done):
            stores.queues.create(name)
            done.add(name)


def dead_letters(stores: Stores, event_id: str | None = None) -> Iterable[Entity]:
    """Rows of dead deliveries: of one event, or all."""
    return delivery_log.dead(stores.table(DELIVERY_LOG), event_id)


def replay(stores: Stores, rows: Iterable[Entity], *, now: datetime) -> int:
    """Queue each dead delivery again from attempt 1; the number queued."""
    ensure_queues(stores)
    table, count = stores.table(DELIVERY_LOG), 0
    for row in rows:
        delivery = decode(str(row["Delivery"]), Delivery).model_copy(update={"attempt": 1})
        # Sent before the row changes: a crash in between repeats the replay, never loses it.
        stores.queues.send(DELIVERY_QUEUE, delivery)
        delivery_log.replayed(table, row, now)
        count += 1
    return count


_ensured: weakref.WeakKeyDictionary[Queues, set[str]] = weakref.WeakKeyDictionary()


_ensure_lock = threading.Lock()
