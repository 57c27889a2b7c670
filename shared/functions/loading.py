"""The app's modules, imported once, on the first call of any function.

The blueprints import nothing heavy at module level, so a cold worker indexes the app and
answers Graph's validation handshake fast. But the worker runs functions on several threads at
once, and threads that import the same packages for the first time at the same moment can
deadlock on Python's module locks or meet half-initialised modules (azure.core's modules import
each other). So the first call of any function imports everything the functions use, on one
thread, under a lock; later calls find it loaded and pay one check.

Then everything alive (these modules and all they import) is moved out of the cyclic
collector's reach with `gc.freeze()`: it lives as long as the worker, and a full collection
that walks it took ~70 ms under webhook load here, added to every answer in flight; frozen,
it takes under 1 ms. Refcounting still frees what is dropped later.
"""

from __future__ import annotations

import gc
import importlib
import threading

# Every module a function in this package imports when called (tests/test_cold_start.py checks
# that this list covers them).
MODULES = (
    "shared.console.access",
    "shared.console.operations",
    "shared.console.pages",
    "shared.console.render",
    "shared.core.contracts",
    "shared.services.actions",
    "shared.services.audit",
    "shared.services.context",
    "shared.services.downloads",
    "shared.services.failure_folder",
    "shared.services.group_commit",
    "shared.services.health",
    "shared.services.inbound",
    "shared.services.mailboxes",
    "shared.services.messages",
    "shared.services.poison",
    "shared.services.records",
    "shared.services.replies",
    "shared.services.retention",
    "shared.services.serving",
    "shared.services.webhooks",
    "shared.sources.graph.state",
    "shared.sources.graph.subscriptions",
    "shared.stages.deliveries",
    "shared.stages.events",
    "shared.stages.file",
    "shared.stages.graph_fetch",
    "shared.stages.graph_notifications",
    "shared.stages.mailbox_actions",
    "shared.stages.map",
    "shared.stages.outbound",
    "shared.stages.polls",
    "shared.stages.task_changes",
    "shared.store.numbers",
    "shared.store.queues",
    "shared.telemetry",
    "shared.functions.openapi",
)

_loaded = threading.Event()
_loading = threading.Lock()


def loaded() -> bool:
    """Has `load` run? (Never waits.)"""
    return _loaded.is_set()


def load() -> None:
    """Import MODULES unless done; concurrent first callers wait for the one that imports."""
    if _loaded.is_set():
        return
    with _loading:
        if not _loaded.is_set():
            for name in MODULES:
                importlib.import_module(name)
            gc.freeze()
            _loaded.set()
