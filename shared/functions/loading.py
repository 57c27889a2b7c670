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
    "shared.core.contracts",
    "shared.pipeline.actions_stage",
    "shared.pipeline.audit",
    "shared.pipeline.context",
    "shared.pipeline.delivery",
    "shared.pipeline.failure_folder",
    "shared.pipeline.file_stage",
    "shared.pipeline.graph_fetch",
    "shared.pipeline.graph_intake",
    "shared.pipeline.group_commit",
    "shared.pipeline.health",
    "shared.pipeline.map_stage",
    "shared.pipeline.messages",
    "shared.pipeline.outbound",
    "shared.pipeline.poison",
    "shared.pipeline.poll",
    "shared.pipeline.records",
    "shared.pipeline.retention",
    "shared.pipeline.serving",
    "shared.pipeline.task_changes",
    "shared.sources.graph.state",
    "shared.sources.graph.subscriptions",
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
