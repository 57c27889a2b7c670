"""A cold worker indexes the app by importing function_app: that import must stay light, so the
Graph validation handshake (10 s, cold start included) is answered before the heavy parts load.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from shared.cli.azurite import REPO

# Loaded by the first call of a function that needs them, never by indexing.
HEAVY = (
    "azure.core",
    "azure.storage",
    "azure.data",
    "azure.identity",
    "azure.monitor",
    "opentelemetry",
    "msal",
    "httpx",
    "requests",
    "pydantic",
    "yaml",
    "cryptography",
    "exchangelib",
    "imapclient",
    "lxml",
    "jinja2",  # the console's: loaded by its first page only
    "nh3",
    "shared.services.context",
    "shared.store.account",
    "shared.core",
)

CHILD = """
import asyncio, json, sys
import function_app
import azure.functions as func
functions = function_app.app.get_functions()  # works once per app
(fn,) = [f for f in functions if f.get_function_name() == "graph_notifications"]
req = func.HttpRequest("POST", "http://localhost/api/graph/notifications",
                       params={"validationToken": "Validation: Testing a+b/c"}, body=b"")
resp = asyncio.run(fn.get_user_function()(req))  # async, as the worker awaits it
print(json.dumps({"modules": sorted(sys.modules), "status": resp.status_code,
                  "body": resp.get_body().decode(), "mimetype": resp.mimetype,
                  "functions": len(functions)}))
"""


def test_indexing_the_app_and_answering_the_handshake_load_nothing_heavy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, check=True, timeout=60
    )
    got = json.loads(done.stdout)
    assert (got["status"], got["body"], got["mimetype"]) == (
        200,
        "Validation: Testing a+b/c",
        "text/plain",
    )
    loaded = [m for m in got["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []
    assert got["functions"] >= 20  # every blueprint still registers its functions


def test_the_first_calls_load_every_module_the_functions_import_once_on_one_thread() -> None:
    from shared.functions.loading import MODULES

    imported: set[str] = set()
    for path in (REPO / "shared" / "functions").glob("*.py"):
        text = path.read_text()
        for dots, name, names in re.findall(r"^ +from (\.+)([\w.]+) import ([\w, ]+)$", text, re.M):
            base = "shared.functions" if dots == "." else "shared"
            if name in ("stages", "services"):  # `from ..stages import map`: the modules named
                imported.update(
                    f"{base}.{name}.{n.split(' as ')[0].strip()}" for n in names.split(",")
                )
            else:
                imported.add(f"{base}.{name}")
    assert imported and imported <= set(MODULES), imported - set(MODULES)

    # Sixteen first calls at once, in a fresh interpreter: each returns with all of it loaded,
    # and what they loaded is frozen out of the collector's full passes.
    child = """
import gc, json, sys, threading
from shared.functions.loading import MODULES, load
before = gc.get_freeze_count()
errors, done = [], []
def first_call():
    try:
        load()
        done.append(all(name in sys.modules for name in MODULES))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=first_call) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join(60)
console = [m for m in ("jinja2", "nh3") if m in sys.modules]  # the console's first page loads them
print(json.dumps({"errors": errors, "done": done, "frozen": gc.get_freeze_count() - before,
                  "console": console}))
"""
    ran = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO, capture_output=True, check=True, timeout=120
    )
    got = json.loads(ran.stdout)
    # What is loaded then lives as long as the worker: a full collection no longer walks it.
    assert got.pop("frozen") > 10_000
    assert got == {"errors": [], "done": [True] * 16, "console": []}
