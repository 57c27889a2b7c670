"""Downstream delivery: events fanned out to webhooks (signed, retried, dead-lettered).

Queue `events` holds what the file stage emitted. `fan_out` turns each event into one
`Delivery` per matching webhook on queue `deliveries` (and puts the event on the configured
Storage queue, if any). `deliver` POSTs one delivery and decides what happens next: delivered,
retried later (the same message sent again with a visibility delay, so a slow endpoint never
holds a worker), or dead-lettered in table `EventDeliveries` with its reason, from where
`replay` sends it again. At least once: an event already delivered to a webhook is not POSTed
again, but a crash between the POST and its row may repeat it, so consumers drop ids they have
seen.
"""

from __future__ import annotations

import hmac
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.client import HTTPException
from typing import Any, Literal

from ..core.config import Config
from ..services.context import AppContext
from ..services.webhooks import DELIVERY_QUEUE, Delivery, ensure_queues
from ..store import delivery_log
from ..store.queues import decode, encode
from ..store.stores import DELIVERY_LOG, Stores
from ..store.tables import Table

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
# The first retry waits this long, each later one twice as long. Tests shrink it (the queue
# delays on Azurite are real).
BACKOFF_BASE_SECONDS = int(os.environ.get("MAILFILER_EVENT_BACKOFF_SECONDS", "10"))
MAX_DELAY_SECONDS = 3600
_READ_LIMIT = 64 * 1024  # of a response body, read only so the connection closes cleanly
USER_AGENT = "Mailfiler-Webhook/1"

Status = Literal["delivered", "retrying", "dead", "replayed"]
Outcome = Literal["delivered", "retry", "dead", "skipped"]


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    status: int | None = None  # the endpoint's HTTP status, if it answered
    delay: int | None = None  # seconds before the next attempt (outcome "retry")
    reason: str = ""


# --- queues -----------------------------------------------------------------------------------


# --- fan-out ----------------------------------------------------------------------------------


# --- delivery ---------------------------------------------------------------------------------


def backoff_seconds(attempt: int, retry_after: int | None = None) -> int:
    """The wait after failed attempt `attempt`: base * 2^(attempt-1), capped at an hour; the
    endpoint's Retry-After wins when it gave one."""
    if retry_after is not None:
        return max(0, min(retry_after, MAX_DELAY_SECONDS))
    return int(min(BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0), MAX_DELAY_SECONDS))


def parse_retry_after(value: str | None, now: datetime) -> int | None:
    """Retry-After as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - now).total_seconds()))


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of "<timestamp>.<body>": the timestamp is signed too, so a
    receiver can refuse replays of old requests."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, "sha256")
    return "sha256=" + mac.hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the body; a webhook must be
    # configured with its final URL, so a redirect surfaces as the 3xx it is.
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class _Response:
    status: int | None  # None: no answer (timeout, connection refused or reset)
    retry_after: str | None = None
    error: str = ""


def _post(url: str, body: bytes, headers: Mapping[str, str]) -> _Response:
    # The config allows only https:// (http:// to localhost), never file: or other schemes.
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        with _opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(_READ_LIMIT)
            return _Response(int(response.status))
    except urllib.error.HTTPError as exc:
        with exc:
            return _Response(exc.code, exc.headers.get("Retry-After") if exc.headers else None)
    except urllib.error.URLError as exc:
        return _Response(None, error=f"{type(exc.reason).__name__}: {exc.reason}")
    except (TimeoutError, OSError, HTTPException) as exc:
        return _Response(None, error=f"{type(exc).__name__}: {exc}")


def _retryable(status: int | None) -> bool:
    return status is None or status in (408, 429) or status >= 500


def deliver(
    stores: Stores,
    config: Config,
    body: bytes,
    *,
    now: datetime,
    environ: Mapping[str, str] | None = None,
) -> Result:
    """POST one delivery and record what came of it (see the module docstring)."""
    delivery = decode(body, Delivery)
    ensure_queues(stores)
    event, table = delivery.event, stores.table(DELIVERY_LOG)
    row = delivery_log.get(table, event.id, delivery.webhook)
    if row is not None and row.get("Status") == "delivered":
        log.info("deliver: %s to %s already delivered", event.id, delivery.webhook)
        return Result("skipped")
    webhook = next((w for w in config.events.webhooks if w.name == delivery.webhook), None)
    if webhook is None:
        return _dead(stores, delivery, now, None, "webhook is no longer in the configuration")
    secret = (os.environ if environ is None else environ).get(webhook.secret_setting)
    if not secret:
        return _dead(
            stores, delivery, now, None, f"app setting {webhook.secret_setting} (secret) is not set"
        )

    payload = encode(event)
    timestamp = str(int(now.timestamp()))
    response = _post(
        webhook.url,
        payload,
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Mailfiler-Event": event.type,
            "X-Mailfiler-Delivery": event.id,
            "X-Mailfiler-Timestamp": timestamp,
            "X-Mailfiler-Signature": signature(secret, timestamp, payload),
        },
    )
    status = response.status
    answer = f"HTTP {status}" if status is not None else response.error or "no response"
    if status is not None and 200 <= status < 300:
        _note(table, delivery, "delivered", now, status, DeliveredAt=now)
        log.info("deliver: %s to %s: %s", event.id, webhook.name, answer)
        return Result("delivered", status)
    if not _retryable(status):
        if status == 410:
            reason = "HTTP 410 Gone: the endpoint refuses this webhook for good"
        elif status is not None and status < 400:
            reason = f"{answer}: redirects are not followed; configure the final URL"
        else:
            reason = f"{answer}: the endpoint refused the event"
        return _dead(stores, delivery, now, status, reason)
    if delivery.attempt >= config.events.max_attempts:
        reason = f"gave up after {delivery.attempt} attempt(s); last: {answer}"
        return _dead(stores, delivery, now, status, reason)

    delay = backoff_seconds(delivery.attempt, parse_retry_after(response.retry_after, now))
    nxt = delivery.model_copy(update={"attempt": delivery.attempt + 1})
    stores.queues.send(DELIVERY_QUEUE, nxt, delay_seconds=delay)
    _note(
        table, delivery, "retrying", now, status, LastError=answer[:1000], RetryDelaySeconds=delay
    )
    log.warning(
        "deliver: %s to %s attempt %d: %s; retry in %d s",
        event.id,
        webhook.name,
        delivery.attempt,
        answer,
        delay,
    )
    return Result("retry", status, delay, answer)


def _note(
    table: Table,
    delivery: Delivery,
    status: Status,
    now: datetime,
    code: int | None,
    **extra: Any,
) -> None:
    delivery_log.put(
        table,
        delivery.event.id,
        delivery.webhook,
        status=status,
        event_type=delivery.event.type,
        attempt=delivery.attempt,
        code=code,
        now=now,
        **extra,
    )


def _dead(
    stores: Stores, delivery: Delivery, now: datetime, code: int | None, reason: str
) -> Result:
    # The delivery message itself is kept so `replay` can send it again unchanged.
    _note(
        stores.table(DELIVERY_LOG),
        delivery,
        "dead",
        now,
        code,
        Reason=reason[:4000],
        DeadAt=now,
        Delivery=encode(delivery).decode("utf-8"),
    )
    log.error("deliver: %s to %s dead: %s", delivery.event.id, delivery.webhook, reason)
    return Result("dead", code, None, reason)


# --- dead letters -----------------------------------------------------------------------------


STAGE = "deliver"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `deliveries` (called by its trigger: functions/stage.py)."""
    return deliver(ctx.stores, ctx.config, body, now=now)
