"""Helpers shared by the storage-backed tests."""

from __future__ import annotations

import importlib
import sys
from collections import Counter
from typing import Any

from shared.cli.azurite import REPO
from shared.cli.host import LocalHost, QueueSettings, Registered, registered_functions
from shared.services.records import all_records
from shared.store.keys import SIDE_ROWS
from shared.store.queues import Queues
from shared.store.stores import MESSAGES, TIMELINE, Stores

_functions: list[Registered] | None = None


def app_functions() -> list[Registered]:
    """function_app's registered functions (the app allows get_functions() only once)."""
    global _functions
    if _functions is None:
        sys.path.insert(0, str(REPO))
        _functions = registered_functions(importlib.import_module("function_app"))
    return _functions


def local_host(queues: Queues, *, in_order: bool = True, **settings: object) -> LocalHost:
    """The app's functions on a local host with host.json's settings (overridden by
    `settings`). By default the host maps inbound mail one message at a time and files it
    before the next (LocalHost.in_order): a reply of the same batch never sleeps out the map
    delay for its parent. Tests of batches and of the wait use `in_order=False`, as the real
    host does, or tests/test_order.py's workers."""
    defaults = QueueSettings.from_host_json(REPO / "host.json")
    values = {**defaults.__dict__, **settings}
    return LocalHost(
        functions=app_functions(),
        queues=queues,
        settings=QueueSettings(**values),
        lease_seconds=30,
        in_order=in_order,
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
