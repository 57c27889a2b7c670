"""A small Graph client over httpx: app-only token, immutable ids, retries that honour
`Retry-After`, and `$batch` (at most 20 requests a call, each with its own status).

Waiting is bounded: a function must not sleep for minutes. When Graph asks for a longer pause
than `max_wait`, `GraphThrottled` carries it to the caller, which re-queues the work with that
delay instead of failing it.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from ...core.errors import MailfilerError
from ..base import SourceBusy, SourceUnavailable
from .auth import TokenProvider

log = logging.getLogger(__name__)
BATCH_MAX = 20  # Graph's limit per $batch
RETRY_STATUSES = {429, 500, 502, 503, 504}
IMMUTABLE_IDS = 'IdType="ImmutableId"'
MAX_RETRY_AFTER = 3600.0  # seconds; what a queue message can be delayed by

_http: dict[tuple[str, str], httpx.Client] = {}
_http_lock = threading.Lock()


def shared_http() -> httpx.Client:
    """One connection pool per process (TLS handshakes are the slow part of a cold call),
    trusting the CAs the environment names (SSL_CERT_FILE / SSL_CERT_DIR, as httpx reads them:
    a TLS-inspecting proxy's CA, or a test's)."""
    trust = (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    with _http_lock:
        client = _http.get(trust)
        if client is None:
            client = _http[trust] = httpx.Client(
                timeout=httpx.Timeout(30.0, connect=10.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                headers={"User-Agent": "mailfiler"},
            )
        return client


class GraphError(RuntimeError, MailfilerError):
    def __init__(self, status: int, code: str, message: str, where: str = "") -> None:
        self.status, self.code, self.message = status, code, message
        super().__init__(f"graph {where}: {status} {code}: {message}".replace("  ", " "))


class GraphNotFound(GraphError):
    pass


class GraphThrottled(GraphError, SourceBusy):
    """Graph wants a pause longer than we wait in-process (429, or 503 with Retry-After):
    re-queue after `retry_after`, the server's own number. A `SourceBusy` too, so every stage
    that obeys a server's back-off obeys Graph's."""

    def __init__(self, retry_after: float, where: str, status: int = 429) -> None:
        self.retry_after = retry_after
        GraphError.__init__(self, status, "throttled", f"retry after {retry_after:.0f} s", where)


class GraphConflict(GraphError, SourceUnavailable):
    """The message kept changing under our conditional PATCH (412 each time): a transient,
    retried later like any other, never written over what someone else just did."""


class GraphUnavailable(GraphError, SourceUnavailable):
    """A transient failure without a server-named pause: the connection failed or timed out
    (status 0), or a 5xx without Retry-After outlasted the in-process retries. The work is
    retried later as it is, never dropped."""


def retry_after(headers: Mapping[str, str], attempt: int) -> float:
    """Seconds to wait: Retry-After (seconds or an HTTP date), else exponential back-off."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return _bounded((when - datetime.now(UTC)).total_seconds())
        else:
            if math.isfinite(seconds):
                return _bounded(seconds)
    return min(2.0**attempt * 0.5, 30.0)


def _bounded(seconds: float) -> float:
    """A server's number, trusted between 0 and an hour (a hostile or broken header)."""
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def _error(response: httpx.Response, where: str) -> GraphError:
    try:
        body = response.json().get("error", {})
        code, message = str(body.get("code", "")), str(body.get("message", ""))[:500]
    except (ValueError, AttributeError):
        code, message = "", response.text[:200]
    kind = GraphNotFound if response.status_code == 404 else GraphError
    return kind(response.status_code, code or response.reason_phrase, message, where)


class GraphClient:
    def __init__(
        self,
        graph_endpoint: str,
        tokens: TokenProvider,
        *,
        http: httpx.Client | None = None,
        max_wait: float = 10.0,
        attempts: int = 6,
        sleep: Any = time.sleep,
    ) -> None:
        self.base = graph_endpoint.rstrip("/") + "/v1.0"
        self.tokens = tokens
        self.http = http or shared_http()
        self.max_wait = max_wait
        self.attempts = attempts
        self._sleep = sleep

    def url(self, path: str) -> str:
        return (
            path
            if path.startswith("https://") or path.startswith("http://")
            else (f"{self.base}/{path.lstrip('/')}")
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call, retried on throttling, 5xx and network errors within `max_wait`."""
        url = self.url(path)
        where = f"{method} {url.split('?')[0].removeprefix(self.base)}"
        waited, refreshed = 0.0, False
        for attempt in range(self.attempts):
            send_headers = {
                "Authorization": f"Bearer {self.tokens.token()}",
                "Prefer": IMMUTABLE_IDS,
                **(headers or {}),
            }
            try:
                response = self.http.request(
                    method, url, params=params, json=json, content=content, headers=send_headers
                )
            except httpx.TransportError as exc:
                wait = retry_after({}, attempt)
                if waited + wait > self.max_wait or attempt == self.attempts - 1:
                    raise GraphUnavailable(0, type(exc).__name__, str(exc)[:300], where) from exc
                log.info("graph: %s: %s, retrying in %.1f s", where, type(exc).__name__, wait)
            else:
                if response.status_code < 400:
                    return response
                if response.status_code == 401 and not refreshed:
                    self.tokens.invalidate()  # revoked or rotated: one fresh token
                    refreshed = True
                    continue
                if response.status_code not in RETRY_STATUSES:
                    raise _error(response, where)
                wait = retry_after(response.headers, attempt)
                if waited + wait > self.max_wait or attempt == self.attempts - 1:
                    named = "retry-after" in {k.lower() for k in response.headers}
                    if response.status_code == 429 or named:
                        raise GraphThrottled(max(wait, 1.0), where, response.status_code)
                    raise GraphUnavailable(
                        response.status_code, "unavailable", f"after {attempt + 1} tries", where
                    )
                log.info("graph: %s: %d, retrying in %.1f s", where, response.status_code, wait)
            self._sleep(wait)
            waited += wait
        raise GraphUnavailable(0, "retries", "no attempt left", where)

    def get(self, path: str, params: Mapping[str, str] | None = None, **kw: Any) -> Any:
        return self.request("GET", path, params=params, **kw).json()

    def pages(self, path: str, params: Mapping[str, str] | None = None, **kw: Any) -> Iterator[Any]:
        """Every page of a collection, following `@odata.nextLink`."""
        page = self.get(path, params, **kw)
        while True:
            yield page
            link = page.get("@odata.nextLink")
            if not link:
                return
            page = self.get(link, **kw)

    def batch(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`$batch` in calls of at most 20; inner 429/5xx are retried within `max_wait`.

        Each request is {"method", "url" (relative to /v1.0), optional "body", "headers"}; the
        answers come back in the same order as {"status", "headers", "body"}.
        """
        out: list[dict[str, Any]] = [{} for _ in requests]
        for start in range(0, len(requests), BATCH_MAX):
            pending = list(range(start, min(start + BATCH_MAX, len(requests))))
            waited = 0.0
            for attempt in range(self.attempts):
                payload = {"requests": [_inner(i, requests[i]) for i in pending]}
                answers = self.request("POST", "$batch", json=payload).json()
                by_id = {int(a["id"]): a for a in answers.get("responses", [])}
                retry, wait = [], 0.0
                for i in pending:
                    answer = by_id.get(i, {"status": 500, "headers": {}, "body": None})
                    out[i] = answer
                    if int(answer.get("status", 500)) in RETRY_STATUSES:
                        retry.append(i)
                        wait = max(wait, retry_after(answer.get("headers") or {}, attempt))
                if not retry or waited + wait > self.max_wait or attempt == self.attempts - 1:
                    break
                self._sleep(wait)
                waited += wait
                pending = retry
        return out


def _inner(index: int, request: Mapping[str, Any]) -> dict[str, Any]:
    inner: dict[str, Any] = {
        "id": str(index),
        "method": request["method"],
        "url": "/" + str(request["url"]).lstrip("/"),
    }
    headers = dict(request.get("headers") or {})
    if "body" in request and request["body"] is not None:
        inner["body"] = request["body"]
        headers.setdefault("Content-Type", "application/json")
    if headers:
        inner["headers"] = headers
    return inner
