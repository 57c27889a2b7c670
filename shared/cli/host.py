"""A local host for the function app, for machines without Azure Functions Core Tools.

It calls the very functions registered in `function_app.py`: HTTP functions are served at
`http://127.0.0.1:7071/api/<route>`, timers fire on their NCRONTAB schedules, and queue functions
run against the storage account with host.json's semantics: base64 messages, `batchSize`
messages at a time, a failed message made visible again after `visibilityTimeout`, and moved to
`<queue>-poison` after `maxDequeueCount` attempts. Function keys are not checked, as in Core Tools.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

from azure.core.exceptions import ServiceRequestError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from croniter import croniter

from ..store.names import FILING, INBOUND
from ..store.queues import Queues, Received

log = logging.getLogger("mailfiler.host")


def load_local_settings(path: Path) -> list[str]:
    """Put local.settings.json `Values` into the environment, as Core Tools does.

    A variable already set in the environment wins, so a test or a shell can override one.
    """
    if not path.is_file():
        return []
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    applied = []
    for key, value in values.items():
        if key not in os.environ:
            os.environ[key] = str(value)
            applied.append(key)
    return applied


def _parse_timespan(value: str | None, default: float) -> float:
    """host.json time spans: "hh:mm:ss" or "d.hh:mm:ss"."""
    if not value:
        return default
    hours, minutes, seconds = value.split(":")
    days = "0"
    if "." in hours:
        days, hours = hours.split(".", 1)
    return float(days) * 86400 + float(hours) * 3600 + float(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueSettings:
    batch_size: int = 16
    # Fetch the next batch once this few messages are still running (None: half the batch,
    # Azure's default); a batch's slowest message then holds no worker idle.
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path) -> QueueSettings:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        q = data.get("extensions", {}).get("queues", {})
        return cls(
            batch_size=int(q.get("batchSize", 16)),
            new_batch_threshold=(int(q["newBatchThreshold"]) if "newBatchThreshold" in q else None),
            max_dequeue_count=int(q.get("maxDequeueCount", 5)),
            max_polling_interval=_parse_timespan(q.get("maxPollingInterval"), 60.0),
            visibility_timeout=_parse_timespan(q.get("visibilityTimeout"), 0.0),
            message_encoding=str(q.get("messageEncoding", "base64")),
        )

    @property
    def threshold(self) -> int:
        """newBatchThreshold as the host applies it."""
        if self.new_batch_threshold is None:
            return self.batch_size // 2
        return max(self.new_batch_threshold, 0)


@dataclass
class Registered:
    name: str
    trigger: dict[str, Any]
    call: Callable[..., Any]

    def invoke(self, arg: Any) -> Any:
        """Call from a thread of our own; an async function runs to its end on a loop of its
        own. (HTTP calls go through LocalHttpServer, which awaits them on its loop.)"""
        result = self.call(arg)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return result


# app -> its functions: azure.functions builds them on the first get_functions() and raises on
# the next call (names no longer unique), so each app is asked once per process.
_registered: dict[object, list[Registered]] = {}


def registered_functions(app_module: ModuleType) -> list[Registered]:
    """The functions `function_app.app` registered (the same list on every call)."""
    app = app_module.app
    if app in _registered:
        return list(_registered[app])
    out = []
    for fn in app.get_functions():
        trigger = {
            k: (v.value if hasattr(v, "value") else v)
            for k, v in fn.get_trigger().get_dict_repr().items()
        }
        if "methods" in trigger:
            trigger["methods"] = [getattr(m, "value", m) for m in trigger["methods"] or []]
        out.append(Registered(fn.get_function_name(), trigger, fn.get_user_function()))
    _registered[app] = out
    return list(out)


# --- the host ---------------------------------------------------------------------------------


class _Running:
    """How many messages of one queue function are running, for its receive loop."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def started(self) -> None:
        with self._changed:
            self.count += 1

    def ended(self, queue: str, error: BaseException | None) -> None:
        if error is not None:  # a delete or release the storage did not take: redelivered
            log.warning("queue %s: message not settled: %s", queue, error)
        with self._changed:
            self.count -= 1
            self._changed.notify_all()

    def wait_down_to(self, most: int, stop: threading.Event) -> bool:
        """Wait until at most `most` are running; False when `stop` is set meanwhile."""
        with self._changed:
            while self.count > most:
                if stop.is_set():
                    return False
                self._changed.wait(0.5)  # wakes on an end; the timeout only to see `stop`
        return not stop.is_set()


@dataclass
class LocalHost:
    functions: list[Registered]
    queues: Queues
    settings: QueueSettings
    lease_seconds: int = 300
    # Map one inbound message and file its plans before the next, in queue (arrival) order, as
    # mail arriving over days is filed: records are numbered as `mailfiler explain` numbers
    # them, and a reply never waits out the map delay for a parent of the same batch. False:
    # batches at once, as the Functions host does (mail arriving together is numbered in the
    # order it is filed).
    in_order: bool = False
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    processed: dict[str, int] = field(default_factory=dict)
    # Mails mapped from `inbound` (a bundle counts its mails; `processed` counts messages).
    mails_mapped: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, kind: str) -> list[Registered]:
        return [fn for fn in self.functions if fn.trigger["type"] == kind]

    # Queues

    def _queue_message(self, message: Received) -> QueueMessage:
        return QueueMessage(
            id=message.id,
            body=message.body,
            pop_receipt=message.pop_receipt,
            dequeue_count=message.dequeue_count,
        )

    def _run_one(self, fn: Registered, queue: str, message: Received) -> None:
        try:
            fn.invoke(self._queue_message(message))
        except Exception as exc:
            if message.dequeue_count >= self.settings.max_dequeue_count:
                log.error(
                    "queue %s: message %s failed %d times, moving to %s-poison: %s",
                    queue,
                    message.id,
                    message.dequeue_count,
                    queue,
                    exc,
                )
                self.queues.send_bytes(f"{queue}-poison", message.body)
                self.queues.delete(queue, message)
            else:
                log.warning(
                    "queue %s: message %s failed (attempt %d): %s",
                    queue,
                    message.id,
                    message.dequeue_count,
                    exc,
                )
                self.queues.release(
                    queue, message, after_seconds=int(self.settings.visibility_timeout)
                )
            return
        self.queues.delete(queue, message)
        mails = _mails(message.body) if queue == INBOUND else 0
        with self._lock:
            self.processed[queue] = self.processed.get(queue, 0) + 1
            self.mails_mapped += mails

    def drain_once(self, fn: Registered, pool: ThreadPoolExecutor) -> int:
        """Receive one batch for `fn` and run it to the end; the number of messages."""
        queue = fn.trigger["queueName"]
        batch = self.queues.receive(
            queue, max_messages=self.settings.batch_size, visibility_timeout=self.lease_seconds
        )
        list(pool.map(lambda m: self._run_one(fn, queue, m), batch))
        return len(batch)

    def _in_order_pair(self) -> tuple[Registered, Registered] | None:
        """The map and file functions, when this host takes inbound mail in order."""
        by_queue = {fn.trigger["queueName"]: fn for fn in self.of_type("queueTrigger")}
        if not self.in_order or INBOUND not in by_queue or FILING not in by_queue:
            return None
        return by_queue[INBOUND], by_queue[FILING]

    def drain_in_order(
        self, inbound: Registered, filing: Registered, pool: ThreadPoolExecutor
    ) -> int:
        """Map the next inbound message, then file until `filing` is empty; messages run.
        (What must wait anyway, a reply whose parent comes later, waits on the queue.)"""
        batch = self.queues.receive(INBOUND, max_messages=1, visibility_timeout=self.lease_seconds)
        if not batch:
            return self.drain_once(filing, pool)
        self._run_one(inbound, INBOUND, batch[0])
        got = 1
        while filed := self.drain_once(filing, pool):
            got += filed
        return got

    def _queue_loop(
        self, fn: Registered, pair: tuple[Registered, Registered] | None = None
    ) -> None:
        wait = 0.1
        away = False  # the storage did not answer the last receive
        queue = fn.trigger["queueName"]
        running = _Running()
        # Room for a batch on top of the threshold's messages still running.
        workers = self.settings.batch_size + self.settings.threshold
        with ThreadPoolExecutor(workers, thread_name_prefix=fn.name) as pool:
            while not self.stop_event.is_set():
                try:
                    got = (
                        self.drain_in_order(*pair, pool)
                        if pair
                        else self.fetch_batch(fn, pool, running)
                    )
                except ServiceRequestError:
                    # Expected while the storage is down: one line when it goes, one when it
                    # is back, not a traceback per receive.
                    if not away:
                        log.warning("queue %s: storage unreachable; receiving again", queue)
                    away, got = True, 0
                except Exception:
                    log.exception("queue %s: receive failed", queue)
                    got = 0
                else:
                    if away:
                        log.info("queue %s: storage reachable again", queue)
                    away = False
                if got:
                    wait = 0.1
                    continue
                self.stop_event.wait(wait)
                wait = min(wait * 2, self.settings.max_polling_interval)

    def fetch_batch(self, fn: Registered, pool: ThreadPoolExecutor, running: _Running) -> int:
        """As the Functions host's queue listener: once no more than `new_batch_threshold`
        messages of `fn` are still running, receive the next batch and start it without
        waiting for the rest; the number received."""
        if not running.wait_down_to(self.settings.threshold, self.stop_event):
            return 0
        queue = fn.trigger["queueName"]
        batch = self.queues.receive(
            queue, max_messages=self.settings.batch_size, visibility_timeout=self.lease_seconds
        )
        for message in batch:
            running.started()
            future = pool.submit(self._run_one, fn, queue, message)
            future.add_done_callback(lambda f: running.ended(queue, f.exception()))
        return len(batch)

    def drain(self, timeout: float = 300.0, only: set[str] | None = None) -> dict[str, int]:
        """Run the queue functions (of the queues in `only`) until their queues are empty."""
        deadline = time.monotonic() + timeout
        fns = [
            f for f in self.of_type("queueTrigger") if not only or f.trigger["queueName"] in only
        ]
        pair = self._in_order_pair()
        with ThreadPoolExecutor(self.settings.batch_size) as pool:
            if pair and (not only or {INBOUND, FILING} <= only):
                while time.monotonic() < deadline and self.drain_in_order(*pair, pool):
                    pass
            while time.monotonic() < deadline:
                if sum(self.drain_once(fn, pool) for fn in fns) == 0:
                    if all(not self.queues.depth(fn.trigger["queueName"]) for fn in fns):
                        break
                    time.sleep(0.2)  # messages waiting out a visibility timeout
        return dict(self.processed)

    # Timers

    def fire_timer(self, fn: Registered, past_due: bool = False) -> None:
        try:
            fn.invoke(TimerRequest(past_due=past_due))
        except ServiceRequestError:  # storage down: expected, one line
            log.warning("timer %s: storage unreachable; it runs again at its next time", fn.name)
        except Exception:
            log.exception("timer %s raised", fn.name)

    def _timer_loop(self, fn: Registered, fire_now: bool) -> None:
        if fire_now or fn.trigger.get("runOnStartup"):
            self.fire_timer(fn)
        schedule = croniter(fn.trigger["schedule"], datetime.now(UTC), second_at_beginning=True)
        while not self.stop_event.is_set():
            due: datetime = schedule.get_next(datetime)
            delay = (due - datetime.now(UTC)).total_seconds()
            if self.stop_event.wait(max(delay, 0)):
                return
            self.fire_timer(fn, past_due=datetime.now(UTC) - due > timedelta(seconds=30))

    def admin_invoke(self, name: str) -> tuple[int, str]:
        """POST /admin/functions/{name}: run a timer now, like the Functions admin API."""
        for fn in self.of_type("timerTrigger"):
            if fn.name == name:
                threading.Thread(target=self.fire_timer, args=(fn,), daemon=True).start()
                return HTTPStatus.ACCEPTED, "accepted"
        return HTTPStatus.NOT_FOUND, f"no timer function {name}"

    # Lifecycle

    def start(
        self, *, queues: bool = True, timers: bool = True, fire_timers_now: bool = True
    ) -> None:
        targets: list[tuple[Callable[..., None], Iterable[Any]]] = []
        if queues:
            pair = self._in_order_pair()
            for fn in self.of_type("queueTrigger"):
                if pair is None or fn.trigger["queueName"] not in (INBOUND, FILING):
                    targets.append((self._queue_loop, (fn,)))
                elif fn is pair[0]:  # one loop takes inbound and filing in turn
                    targets.append((self._queue_loop, (fn, pair)))
        if timers:
            targets += [
                (self._timer_loop, (fn, fire_timers_now)) for fn in self.of_type("timerTrigger")
            ]
        for target, args in targets:
            thread = threading.Thread(target=target, args=tuple(args), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)


def _mails(body: bytes) -> int:
    """How many mails an `inbound` message carried (one, or a bundle's)."""
    from ..core.errors import ContractError
    from ..services.inbound import bundle_of

    try:
        bundle = bundle_of(body)
    except ContractError:  # a malformed bundle: its stage sent it to the poison queue
        return 0
    return len(bundle.mails) if bundle is not None else 1
