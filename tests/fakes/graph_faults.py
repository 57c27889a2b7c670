"""Fault injection, per-mailbox concurrency tracking and the request log of the fake Graph.

Throttled answers follow "Microsoft Graph throttling guidance" (concepts/throttling.md): status
429 with a ``Retry-After`` header (seconds) and ``{"error": {"code": "TooManyRequests", ...}}``;
Outlook's per-mailbox limit of 4 concurrent requests answers 429 ``ApplicationThrottled``
("Application is over its MailboxConcurrency limit.") as Exchange Online does
(concepts/throttling-limits.md, Outlook service limits).
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One rule: answer ``status`` (429, 503, ...) and/or sleep ``delay`` seconds first.

    It applies to requests whose method matches (if given) and whose path matches ``path`` (a
    regex searched in the decoded path, e.g. ``/v1.0/users/a@x/messages``; without ``path`` it
    applies to Graph calls under /v1.0 only). ``count`` limits how many requests it hits,
    ``rate`` makes it hit that fraction of matching requests (seeded random).
    """

    status: int | None = None
    delay: float = 0.0
    retry_after: int | None = None
    path: str | None = None
    method: str | None = None
    count: int | None = None
    rate: float | None = None
    code: str | None = None
    message: str | None = None
    hits: int = 0
    # Hold matching requests until this many are waiting, then answer them all (a race made
    # certain: e.g. two workers creating the same folder). Waits at most 10 s.
    barrier: threading.Barrier | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path is None:
            return path.startswith("/v1.0/")
        return re.search(self.path, path) is not None


class Faults:
    """The fake's fault plan; thread-safe. ``fake.faults.throttle(count=2, retry_after=0)``."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._random = random.Random(seed)

    def seed(self, seed: int) -> None:
        with self._lock:
            self._random.seed(seed)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._rules.append(fault)
        return fault

    def throttle(
        self,
        *,
        count: int | None = None,
        rate: float | None = None,
        path: str | None = None,
        method: str | None = None,
        retry_after: int = 1,
    ) -> Fault:
        """429 TooManyRequests with Retry-After: ``retry_after`` seconds."""
        fault = Fault(429, code="TooManyRequests", message="Please retry again later.")
        return self._status(fault, count, rate, path, method, retry_after)

    def unavailable(
        self,
        *,
        count: int | None = None,
        rate: float | None = None,
        path: str | None = None,
        method: str | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """503 serviceNotAvailable (with Retry-After when given)."""
        message = "The service is temporarily unavailable. Retry after a delay."
        fault = Fault(503, code="serviceNotAvailable", message=message)
        return self._status(fault, count, rate, path, method, retry_after)

    def _status(
        self,
        fault: Fault,
        count: int | None,
        rate: float | None,
        path: str | None,
        method: str | None,
        retry_after: int | None,
    ) -> Fault:
        """Add a status fault where it applies; once, unless ``count`` or ``rate`` say more."""
        fault.count = 1 if count is None and rate is None else count
        fault.rate, fault.path, fault.method, fault.retry_after = rate, path, method, retry_after
        return self.add(fault)

    def delay(
        self,
        seconds: float,
        *,
        count: int | None = None,
        rate: float | None = None,
        path: str | None = None,
        method: str | None = None,
    ) -> Fault:
        """Sleep ``seconds`` (inside the mailbox's in-flight window) before answering normally."""
        return self.add(Fault(delay=seconds, path=path, method=method, count=count, rate=rate))

    def rendezvous(
        self, parties: int, *, path: str | None = None, method: str | None = None
    ) -> Fault:
        """Hold the next ``parties`` matching requests until all of them have arrived."""
        return self.add(
            Fault(
                path=path,
                method=method,
                count=parties,
                barrier=threading.Barrier(parties, timeout=10),
            )
        )

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    def pick(self, method: str, path: str) -> tuple[float, Fault | None]:
        """Total delay and the first status fault hitting this request (consuming counts)."""
        total = 0.0
        status: Fault | None = None
        barriers: list[threading.Barrier] = []
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.count is not None and rule.count <= 0:
                    continue
                if status is not None and rule.status is not None:
                    continue
                if rule.rate is not None and self._random.random() >= rule.rate:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                rule.hits += 1
                total += rule.delay
                if rule.barrier is not None:
                    barriers.append(rule.barrier)
                if rule.status is not None:
                    status = rule
        for barrier in barriers:  # outside the lock: the other parties must get in
            with contextlib.suppress(threading.BrokenBarrierError):  # a party never came
                barrier.wait()
        return total, status


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake answered (inner $batch requests too, with ``in_batch=True``)."""

    method: str
    path: str
    query: str
    status: int
    user: str | None  # the mailbox key as given to add_user
    tenant: str | None  # the tenant of the bearer token
    client_id: str | None
    in_batch: bool
    prefer: str | None
    started: float
    elapsed: float
    if_match: str | None = None  # the request's If-Match header, as sent


@dataclass
class ConcurrencyTracker:
    """In-flight requests per mailbox; records the peak; optionally enforces a limit."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def enter(self, user: str, limit: int | None) -> bool:
        """Count the request in; False when ``limit`` is exceeded (the request is counted out)."""
        with self.lock:
            self.in_flight[user] += 1
            now = self.in_flight[user]
            self.peak[user] = max(self.peak[user], now)
            if limit is not None and now > limit:
                self.in_flight[user] -= 1
                return False
            return True

    def leave(self, user: str) -> None:
        with self.lock:
            self.in_flight[user] -= 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.peak)

    def reset(self) -> None:
        with self.lock:
            self.peak.clear()


def sleep(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)
