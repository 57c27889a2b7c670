"""Outbound HTTP of the fake Graph: the notification URL validation handshake and deliveries.

- Validation ("notificationUrl validation", concepts/includes/
  change-notifications-delivery-notificationurl-validation.md): POST
  ``{url}?validationToken={url-encoded token}`` with ``Content-Type: text/plain; charset=utf-8``;
  the endpoint must answer within 10 s with 200, ``Content-Type: text/plain`` and the decoded
  token as the body, else the subscription is not created (400).
- Delivery ("Receive change notifications through webhooks",
  concepts/change-notifications-delivery-webhooks.md): POST {"value": [...]} to the
  notificationUrl (its query string kept); a 2xx within 3 s acknowledges; otherwise Graph retries.
  One POST may carry notifications of several subscriptions that share the URL.
"""

from __future__ import annotations

import json
import random
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.fakes.graph_model import JSON
from tests.fakes.graph_subscriptions import Pending

GRAPH_TIMEOUT = 3.0  # "Notifications are published using an HTTP client with a 3-second timeout"
VALIDATION_TIMEOUT = 10.0


def default_validation_token() -> str:
    """Graph's token reads like this; the trailing symbols check URL decoding is exact."""
    return (
        "Validation: Testing client application reachability for subscription "
        f"Request-Id: {uuid.uuid4()} +/=&%"
    )


@dataclass(frozen=True)
class ValidationRecord:
    url: str
    token: str
    status: int | None
    content_type: str | None
    body: str | None
    ok: bool
    elapsed: float
    error: str | None = None


@dataclass(frozen=True)
class PostRecord:
    """One POST the fake made (delivery attempt, lifecycle notification or forged body)."""

    url: str
    status: int | None
    elapsed: float
    attempt: int
    count: int
    error: str | None
    body: Any


@dataclass
class DeliveryReport:
    """What ``fake.deliver()`` did. ``delivered``/``failed`` count notifications, not POSTs."""

    posts: list[PostRecord] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    requeued: int = 0
    dropped: int = 0
    duplicated: int = 0
    notifications: list[JSON] = field(default_factory=list)  # acknowledged ones, in order

    @property
    def statuses(self) -> list[int | None]:
        return [p.status for p in self.posts]

    def slow(self, threshold: float = 2.9) -> list[PostRecord]:
        """Answers Graph would count as slow (over 2,900 ms)."""
        return [p for p in self.posts if p.elapsed > threshold]


def with_query(url: str, name: str, value: str) -> str:
    joiner = "&" if urllib.parse.urlsplit(url).query else "?"
    return f"{url}{joiner}{name}={urllib.parse.quote(value, safe='')}"


def retryable(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


class Notifier:
    def __init__(self, verify: bool | str = False) -> None:
        context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        self.client = httpx.Client(verify=context, trust_env=False, follow_redirects=False)
        self.token_factory: Callable[[], str] = default_validation_token

    def close(self) -> None:
        self.client.close()

    def validate(self, url: str, timeout: float = VALIDATION_TIMEOUT) -> ValidationRecord:
        token = self.token_factory()
        started = time.perf_counter()
        try:
            resp = self.client.post(
                with_query(url, "validationToken", token),
                headers={"Content-Type": "text/plain; charset=utf-8"},
                content=b"",
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            return ValidationRecord(
                url, token, None, None, None, False, time.perf_counter() - started, repr(exc)
            )
        elapsed = time.perf_counter() - started
        ctype = resp.headers.get("content-type")
        ok = (
            resp.status_code == 200
            and (ctype or "").split(";")[0].strip().lower() == "text/plain"
            and resp.text == token
            and elapsed <= timeout
        )
        return ValidationRecord(url, token, resp.status_code, ctype, resp.text, ok, elapsed)

    def post(
        self,
        url: str,
        body: Any,
        *,
        timeout: float = GRAPH_TIMEOUT,
        attempts: int = 1,
        count: int = 0,
    ) -> list[PostRecord]:
        """POST ``body`` (JSON unless bytes), retrying 5xx/429/timeouts up to ``attempts`` times."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        records: list[PostRecord] = []
        for attempt in range(1, max(1, attempts) + 1):
            started = time.perf_counter()
            try:
                resp = self.client.post(
                    url,
                    content=content,
                    headers={"Content-Type": "application/json; charset=utf-8"},
                    timeout=timeout,
                )
                status: int | None = resp.status_code
                error = None
            except httpx.HTTPError as exc:
                status, error = None, repr(exc)
            records.append(
                PostRecord(url, status, time.perf_counter() - started, attempt, count, error, body)
            )
            if not retryable(status):
                break
        return records


def deliver(
    notifier: Notifier,
    items: list[Pending],
    *,
    batch_size: int = 1,
    duplicate_rate: float = 0.0,
    shuffle: bool = False,
    drop_rate: float = 0.0,
    concurrency: int = 1,
    seed: int | None = None,
    attempts: int = 3,
    timeout: float = GRAPH_TIMEOUT,
) -> tuple[DeliveryReport, list[Pending]]:
    """POST queued notifications; returns the report and the items to put back in the outbox."""
    rng = random.Random(seed)
    report = DeliveryReport()
    kept: list[Pending] = []
    for item in items:
        if drop_rate and rng.random() < drop_rate:
            report.dropped += 1
            continue
        kept.append(item)
        if duplicate_rate and rng.random() < duplicate_rate:
            kept.append(item)
            report.duplicated += 1
    if shuffle:
        rng.shuffle(kept)
    by_url: dict[str, list[Pending]] = {}
    for item in kept:
        by_url.setdefault(item.url, []).append(item)
    size = max(1, batch_size)
    chunks = [
        (url, group[i : i + size])
        for url, group in by_url.items()
        for i in range(0, len(group), size)
    ]

    def send(chunk: tuple[str, list[Pending]]) -> list[PostRecord]:
        url, group = chunk
        body = {"value": [p.notification for p in group]}
        return notifier.post(url, body, timeout=timeout, attempts=attempts, count=len(group))

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = list(pool.map(send, chunks))
    again: list[Pending] = []
    for (_, group), records in zip(chunks, results, strict=True):
        report.posts.extend(records)
        last = records[-1].status
        if last is not None and 200 <= last < 300:
            report.delivered += len(group)
            report.notifications.extend(p.notification for p in group)
        else:
            report.failed += len(group)
            if retryable(last):
                again.extend(group)
    report.requeued = len(again)
    return report, again
