"""Helpers shared by the storage-backed tests."""

from __future__ import annotations

import importlib
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.cli.azurite import REPO
from shared.cli.host import LocalHost, QueueSettings, Registered, registered_functions
from shared.services.records import all_records
from shared.store.keys import SIDE_ROWS
from shared.store.queues import Queues
from shared.store.stores import FILING, INBOUND, MESSAGES, TIMELINE, Stores

_functions: list[Registered] | None = None


def app_functions() -> list[Registered]:
    """function_app's registered functions (the app allows get_functions() only once)."""
    global _functions
    if _functions is None:
        sys.path.insert(0, str(REPO))
        _functions = registered_functions(importlib.import_module("function_app"))
    return _functions


class InOrderHost(LocalHost):
    """The local host, whose drain first takes `inbound` one message at a time in queue order,
    filing each one's plans before mapping the next, as mail that arrives over days is filed.
    In a batch mapped at once a reply finds its parent not yet filed and waits for it on the
    queue (the map stage's delays: 2 s, then 4 s...): seconds of sleep in every test that files
    a conversation. What must wait anyway (mail whose parent comes later) is left to the host's
    own drain, as before; tests of batches and of the wait use `in_order=False` or
    tests/test_order.py's workers."""

    def drain(self, timeout: float = 300.0, only: set[str] | None = None) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        by_queue = {fn.trigger["queueName"]: fn for fn in self.of_type("queueTrigger")}
        if (only is None or {INBOUND, FILING} <= only) and {INBOUND, FILING} <= set(by_queue):
            with ThreadPoolExecutor(self.settings.batch_size) as pool:
                while time.monotonic() < deadline:
                    batch = self.queues.receive(
                        INBOUND, max_messages=1, visibility_timeout=self.lease_seconds
                    )
                    if not batch:
                        break
                    self._run_one(by_queue[INBOUND], INBOUND, batch[0])
                    while self.drain_once(by_queue[FILING], pool) and time.monotonic() < deadline:
                        pass
        return super().drain(max(deadline - time.monotonic(), 0.0), only)


def local_host(queues: Queues, *, in_order: bool = True, **settings: object) -> LocalHost:
    """The app's functions on a local host with host.json's settings (overridden by
    `settings`); `in_order=False` drains in batches only, as the real host does."""
    defaults = QueueSettings.from_host_json(REPO / "host.json")
    values = {**defaults.__dict__, **settings}
    host = InOrderHost if in_order else LocalHost
    return host(
        functions=app_functions(), queues=queues, settings=QueueSettings(**values), lease_seconds=30
    )


def timeline_entries(stores: Stores, select: list[str] | None = None) -> list[dict[str, Any]]:
    """Every record's timeline entries, without the audit and participant rows beside them."""
    fields = None if select is None else [*select, "RowKey"]
    return [
        e
        for e in stores.table(TIMELINE).all(select=fields)
        if not e["RowKey"].startswith(SIDE_ROWS)
    ]


def timeline_counts(stores: Stores) -> Counter[str]:
    return Counter(e["PartitionKey"] for e in timeline_entries(stores, ["PartitionKey"]))


def records(stores: Stores) -> list[dict[str, Any]]:
    return list(all_records(stores))


def filed_keys(stores: Stores) -> list[str]:
    return [e["PartitionKey"] for e in stores.table(MESSAGES).all() if e["RowKey"] == "msg"]


def filed_count(stores: Stores) -> int:
    """How many messages are filed: filtered and projected by storage, so a test can poll it
    often without loading Azurite with every row of every message (claims, copies...)."""
    client = stores.table(MESSAGES).client
    return sum(1 for _ in client.query_entities("RowKey eq 'msg'", select=["PartitionKey"]))
