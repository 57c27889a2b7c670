"""A server that asked for quiet: recognise its answer, and record the back-off every stage
reads before it calls that mailbox's server again (store/backoff.py)."""

from __future__ import annotations

import logging
import math
from datetime import datetime

from ..sources.base import SourceBusy
from ..store.backoff import note_backoff
from ..store.stores import Stores

log = logging.getLogger(__name__)


def busy_seconds(exc: BaseException) -> float | None:
    """The quiet `exc` asks for: EWS ErrorServerBusy, IMAP [UNAVAILABLE] and Graph 429/503 with
    Retry-After (GraphThrottled) are all `SourceBusy`; None for any other failure."""
    return float(exc.retry_after) if isinstance(exc, SourceBusy) else None


def note_busy(stores: Stores, mailbox: str, exc: BaseException, now: datetime) -> int | None:
    """Record the back-off `exc` asks for; the whole seconds until the mailbox's back-off ends
    (a longer one already noted wins), or None when `exc` is not a server asking for quiet."""
    seconds = busy_seconds(exc)
    if seconds is None:
        return None
    until = note_backoff(stores, mailbox, now, seconds, f"{type(exc).__name__}: {exc}")
    wait = max(1, math.ceil((until - now).total_seconds()))
    log.warning("mailbox=%s server asks for quiet: no requests for %d s", mailbox, wait)
    return wait
