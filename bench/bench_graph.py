"""Graph: the webhook's answer time under load, the validation answer from a cold process, and the
Graph calls of one subscription renewal cycle for 10,000 mailboxes.

Everything runs on a private Azurite and the fake Graph (tests/fakes/graph.py, real HTTPS on
loopback). The issue's goals: webhook p99 <= 200 ms (POSTs of 100 notifications, 50 at once),
validation <= 1 s from a cold process, a renewal cycle of 10,000 mailboxes in <= 500 `$batch`
calls. Run with ``python -m bench.bench_graph``; no figure is asserted.

1. Webhook: the app's functions served over real HTTP by the local host (LocalHttpServer), one
   Graph mailbox subscribed through `maintain()` (the fake performs the validation handshake),
   100 genuine notifications taken from the fake's outbox. A separate load process POSTs them as
   one body, 400 times, 50 (and then 10) in flight, after 100 POSTs to warm up, and times each
   answer from request to response; then the queue messages the intake persisted are read back
   and unpacked. The load comes from bench/loadgen.py (one thread, non-blocking sockets), and
   once more from 50 threads over httpx for comparison: that client spends about 1 ms of CPU per
   POST on a machine whose two cores also run the server and Azurite. CPU per POST is printed
   for the load process, the server (this process) and Azurite, and the parsing and compression
   of one POST side by side with the standard library's.
2. Cold validation: a fresh interpreter per run imports `function_app`, looks the function up as
   the worker's indexing does (`app.get_functions()`) and calls `graph_notifications` with a
   `validationToken`; timed from spawn until the answer reaches the parent.
3. Actions (issue 18): one Graph mailbox with `after_filing` (mark read, a category, move to
   `Mailfiler/Filed`), subscribed for real. After one mail to warm up (tokens, folder ids),
   ACTION_MAILS mails arrive, their notifications are delivered (some twice), and the local host
   runs every stage; the fake's request log gives Graph calls per filed mail (goal <= 4: state,
   MIME, one PATCH, one move). Then the notifications our own PATCH and move raised (two
   `updated` per change, some delivered twice) are delivered and run: goal 0 fetches per
   notification.
4. Renewal: 10,000 Graph mailboxes of one app and tenant. The first subscription is created by
   `maintain(only=...)` for real; the other 9,999 are copies of it (fake registry entries and
   GraphState rows as `_create` writes them), because 10,000 real creations would run 20,000
   handshakes. One `maintain()` pass then renews every one of them against the fake.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from isal import isal_zlib

from bench import loadgen
from shared.cli.azurite import Azurite, free_port
from shared.cli.host import LocalHost, QueueSettings, registered_functions
from shared.cli.local_http import LocalHttpServer
from shared.core.config import Config
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings, load_config
from shared.sources.graph.clientstate import make, new_nonce
from shared.sources.graph.subscriptions import maintain, wanted
from shared.stages.graph_notifications import unpack
from shared.store.account import RequestCounter, StorageSettings
from shared.store.keys import NONCES, SUBSCRIPTIONS, subscription_row
from shared.store.stores import GRAPH_NOTIFICATIONS, GRAPH_STATE, Stores
from tests.fakes.graph import FakeGraph
from tests.fakes.graph_model import new_guid

REPO = Path(__file__).resolve().parents[1]
TENANT, APP, APP_SECRET = "contoso-tenant", "app-mailfiler", "app-secret-value"
CLIENT_STATE_SECRET = "client-state-secret-for-the-bench"
USER = "support@contoso.example"

NOTIFICATIONS = 100  # per POST
CONCURRENCY = 50  # POSTs in flight: the goal's load
# (load client, POSTs in flight): the goal's load, a light one (latency is service time, not
# queueing), and the goal's load again from 50 threads over httpx, for comparison.
SCENARIOS = (("raw", CONCURRENCY), ("raw", 10), ("httpx", CONCURRENCY))
POSTS = 400
WARM_UP = 100  # POSTs before the measured runs
COLD_RUNS = 5
MAILBOXES = 10_000
GOALS = {"webhook_p99_ms": 200.0, "validation_s": 1.0, "batches": 500, "calls_per_mail": 4}
ACTION_MAILS = 20
AFTER_FILING = {"mark_read": True, "category": "Клиенты", "move_to": "Mailfiler/Filed"}


# --- setup ------------------------------------------------------------------------------------


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set app settings for the bench and put the previous values back afterwards."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def subscribed(file: Path, data: dict[str, Any], connection: str, stores: Stores) -> AppContext:
    """The configuration written (JSON is YAML), the app's context set, state fresh, and the
    one mailbox's subscription made."""
    file.write_text(json.dumps(data, ensure_ascii=False))
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": connection, "MAILFILER_CONFIG": str(file)}
    )
    ctx = AppContext(settings, load_config(file), file.parent, stores)
    set_context(ctx)
    fresh_state(stores)
    made = maintain(ctx.config, stores, datetime.now(UTC))
    if made.created != 1 or made.failed:
        raise RuntimeError(f"subscribing failed: {made}")
    return ctx


def config_data(users: dict[str, str], fake: FakeGraph, base: str) -> dict[str, Any]:
    """A configuration of one Graph mailbox per (name, user), all of one app and tenant."""
    mailbox = {
        "kind": "graph",
        "tenant_id": TENANT,
        "client_id": APP,
        "client_secret_setting": "GRAPH_APP_SECRET",
        "record_type": "case",
        "graph_endpoint": fake.base_url,
        "login_endpoint": fake.login_url,
    }
    return {
        "record_types": [{"name": "case", "prefix": "CASE"}],
        "mailboxes": [{"name": name, "user": user, **mailbox} for name, user in users.items()],
        "graph": {"notification_url": base},
    }


def actions_cost(
    stores: Stores, connection: str, base: str, file: Path, host: LocalHost
) -> dict[str, Any]:
    """Graph calls per filed mail with after-filing actions, and per notification of our own
    change, counted from the fake's request log (issue 18, points 2 and 4)."""
    with FakeGraph() as fake, environment(fake.ca_env()):
        fake.add_app(TENANT, APP, APP_SECRET)
        fake.add_user(USER, tenant=TENANT)
        data = config_data({"m365": USER}, fake, base)
        data["mailboxes"][0]["after_filing"] = AFTER_FILING
        subscribed(file, data, connection, stores)
        fake.add_message(USER, "inbox", mime(10_000))  # warm-up: tokens and folder ids
        for _ in range(2):
            fake.deliver()
            host.drain()
        fake.clear_requests()
        ids = [fake.add_message(USER, "inbox", mime(10_001 + i)) for i in range(ACTION_MAILS)]
        arrived = fake.deliver(duplicate_rate=0.2, seed=11)
        host.drain()
        filing = [r for r in fake.requests if r.path.startswith("/v1.0/users/")]
        moved = sum(
            1
            for i in ids
            if fake.message(USER, i)["parentFolderId"] != fake.folder_id(USER, "inbox")
        )
        fake.clear_requests()
        echoes = fake.deliver(duplicate_rate=0.2, seed=12)
        host.drain()
        idle = [r for r in fake.requests if r.path.startswith("/v1.0/users/")]
    kinds = Counter(_kind(r.method, r.path) for r in filing)
    return {
        "mails": len(ids),
        "moved": moved,
        "arrived": arrived.delivered,
        "calls": len(filing),
        "kinds": dict(kinds),
        "echoes": echoes.delivered,
        "idle_calls": len(idle),
        "idle_fetches": sum(1 for r in idle if r.method == "GET"),
    }


def _kind(method: str, path: str) -> str:
    if path.endswith("/$value"):
        return "MIME"
    if path.endswith("/move"):
        return "move"
    if "/mailFolders" in path:
        return "folders"
    return {"GET": "state", "PATCH": "PATCH"}.get(method, method)


def mime(n: int) -> bytes:
    return (
        f"From: customer{n}@customer.example\r\nTo: {USER}\r\nSubject: Question {n}\r\n"
        f"Message-ID: <m{n}@customer.example>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        f"\r\nHello {n}.\r\n"
    ).encode()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 400 answers: the 396th fastest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --- 1. webhook under load --------------------------------------------------------------------


def post_all_httpx(url: str, body: bytes, total: int, concurrency: int) -> dict[str, Any]:
    """POST `body` `total` times, `concurrency` at once, from as many threads over httpx; each
    answer's latency and status. The comparison for `loadgen.post_all`."""
    latencies: list[float] = []
    statuses: list[int | str] = []  # a status, or the client's exception
    lock = threading.Lock()
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits, timeout=30.0, trust_env=False) as client:

        def one(_: int) -> None:
            started = time.perf_counter()
            status: int | str
            try:
                status = client.post(url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                statuses.append(status)

        cpu = time.process_time()
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(total)))
        wall = time.perf_counter() - started
    return {
        "latencies": latencies,
        "statuses": statuses,
        "wall": wall,
        "cpu": time.process_time() - cpu,
    }


CLIENTS = {"raw": loadgen.post_all, "httpx": post_all_httpx}


def load_child() -> None:
    """`python -m bench.bench_graph --load CLIENT URL TOTAL CONCURRENCY`, the body on stdin."""
    client, url = CLIENTS[sys.argv[2]], sys.argv[3]
    total, concurrency = int(sys.argv[4]), int(sys.argv[5])
    print(json.dumps(client(url, sys.stdin.buffer.read(), total, concurrency)))


def run_load(
    url: str, body: bytes, concurrency: int, client: str, total: int = POSTS
) -> dict[str, Any]:
    args = [url, str(total), str(concurrency)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_graph", "--load", client, *args],
        input=body,
        capture_output=True,
        cwd=REPO,
        check=True,
        timeout=300,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def drain_queue(stores: Stores) -> tuple[int, list[int], int]:
    """Messages on the notification queue: count, their sizes (bytes as persisted), and the
    notifications they carry."""
    client = stores.queues.client(GRAPH_NOTIFICATIONS)
    sizes: list[int] = []
    carried = 0
    seen: set[str] = set()
    for message in client.receive_messages(messages_per_page=32, visibility_timeout=600):
        if message.id in seen:
            continue
        seen.add(message.id)
        body: bytes = message.content
        sizes.append(len(body))
        carried += len(unpack(body))
    return len(sizes), sizes, carried


def fresh_state(stores: Stores) -> None:
    """An empty GraphState: each scenario's subscriptions only."""
    stores.account.tables.delete_table(GRAPH_STATE)
    stores.table(GRAPH_STATE).create()


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def webhook(
    stores: Stores, connection: str, base: str, file: Path, azurite: int
) -> list[dict[str, Any]]:
    """Subscribe one mailbox through the server at `base`, then load its webhook once per
    scenario; with the CPU the server (this process) and Azurite (pid `azurite`) used."""
    with FakeGraph() as fake, environment(fake.ca_env()):
        fake.add_app(TENANT, APP, APP_SECRET)
        fake.add_user(USER, tenant=TENANT)
        subscribed(file, config_data({"m365": USER}, fake, base), connection, stores)
        for i in range(NOTIFICATIONS):
            fake.add_message(USER, "inbox", mime(i))
        notes = fake.outbox
        if len(notes) != NOTIFICATIONS:
            raise RuntimeError(f"the fake holds {len(notes)} notifications, not {NOTIFICATIONS}")
        body = json.dumps({"value": notes}).encode()
        url = f"{base}/graph/notifications"
        # Warm-up, not measured: the first POSTs of a process pay for lazy imports, the
        # storage connection pool and the first nonce lookup (a cold start is part 2's).
        run_load(url, body, CONCURRENCY, "raw", total=WARM_UP)
        results = []
        for client, concurrency in SCENARIOS:
            stores.queues.clear(GRAPH_NOTIFICATIONS)
            server_cpu, azurite_cpu = time.process_time(), cpu_seconds(azurite)
            load = run_load(url, body, concurrency, client)
            server_cpu = time.process_time() - server_cpu
            azurite_after = cpu_seconds(azurite)
            count, sizes, carried = drain_queue(stores)
            results.append(
                {
                    **load,
                    "client": client,
                    "concurrency": concurrency,
                    "server_cpu": server_cpu,
                    "azurite_cpu": None
                    if azurite_cpu is None or azurite_after is None
                    else azurite_after - azurite_cpu,
                    "body": len(body),
                    "messages": count,
                    "sizes": sizes,
                    "carried": carried,
                }
            )
        results[0]["work"] = parse_and_compress(body)
    return results


def parse_and_compress(body: bytes, repeats: int = 200) -> dict[str, dict[str, float]]:
    """Most of a POST's CPU on the event loop, side by side: parsing with `json` and orjson,
    compressing at level 1 with zlib and ISA-L (graph_intake uses orjson and ISA-L); best of 5
    rounds of `repeats`, in ms."""

    def best(work: Callable[[], object]) -> float:
        return min(timeit.repeat(work, number=repeats, repeat=5)) / repeats * 1000

    return {
        "parse": {
            "json": best(lambda: json.loads(body)),
            "orjson": best(lambda: orjson.loads(body)),
        },
        "compress": {
            "zlib": best(lambda: zlib.compress(body, 1)),
            "isal": best(lambda: isal_zlib.compress(body, 1)),
        },
        "bytes": {
            "zlib": len(zlib.compress(body, 1)),
            "isal": len(isal_zlib.compress(body, 1)),
        },
    }


# --- 2. validation from a cold process ---------------------------------------------------------

COLD_CHILD = """
import asyncio, json, sys, time
started = time.perf_counter()
import function_app
imported = time.perf_counter()
import azure.functions as func
(fn,) = [f for f in function_app.app.get_functions()
         if f.get_function_name() == "graph_notifications"]
token = sys.argv[1]
req = func.HttpRequest("POST", "http://localhost/api/graph/notifications",
                       params={"validationToken": token}, body=b"")
resp = asyncio.run(fn.get_user_function()(req))  # async: the worker awaits it on its loop
answered = time.perf_counter()
print(json.dumps({"status": resp.status_code, "mimetype": resp.mimetype,
                  "echoed": resp.get_body().decode() == token,
                  "import": imported - started, "call": answered - imported}), flush=True)
"""


def cold(connection: str, file: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "AzureWebJobsStorage": connection, "MAILFILER_CONFIG": str(file)}
    runs = []
    for _ in range(COLD_RUNS):
        token = (
            f"Validation: Testing client application reachability Request-Id: {new_guid()} +/=&%"
        )
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", COLD_CHILD, token],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        elapsed = time.perf_counter() - started
        _, err = child.communicate(timeout=60)
        if not line:
            raise RuntimeError(f"the cold process gave no answer: {err.decode()[-2000:]}")
        runs.append({**json.loads(line), "wall": elapsed})
    return runs


# --- 3. one renewal cycle for 10,000 mailboxes -------------------------------------------------

FIRST = "mb00000"


def stored_fields(row: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """A row as read, without the read's metadata; fails if `maintain` did not write it."""
    if row is None:
        raise RuntimeError(f"maintain did not write the first subscription's {what} row")
    return {k: v for k, v in row.items() if not k.startswith("_") and k != "Timestamp"}


def seed(fake: FakeGraph, config: Config, stores: Stores, user_ids: dict[str, str]) -> None:
    """Copy the one subscription `maintain` made to every other mailbox: an entry in the fake's
    registry, and GraphState rows with every field `_create` wrote for the first (only the
    mailbox's own values replaced: ids, resource, nonce)."""
    table = stores.table(GRAPH_STATE)
    real = stored_fields(table.get(SUBSCRIPTIONS, subscription_row(FIRST, "mail")), "subscription")
    real_nonce = stored_fields(table.get(NONCES, str(real["Nonce"])), "nonce")
    template = fake.subscription(str(real["SubscriptionId"]))
    key = CLIENT_STATE_SECRET.encode()
    subs, nonce_rows, sub_rows = [], [], []
    for want in wanted(config):
        if want.mailbox.name == FIRST:
            continue
        nonce = new_nonce()
        sub = dataclasses.replace(
            template,
            id=new_guid(),
            resource=want.resource,
            client_state=make(key, nonce),
            user_id=user_ids[want.mailbox.user],
        )
        subs.append(sub)
        nonce_rows.append(
            real_nonce
            | {
                "RowKey": nonce,
                "Mailbox": want.mailbox.name,
                "Kind": want.kind,
                "SubscriptionId": sub.id,
            }
        )
        sub_rows.append(
            real
            | {
                "RowKey": subscription_row(want.mailbox.name, want.kind),
                "Mailbox": want.mailbox.name,
                "SubscriptionId": sub.id,
                "Resource": want.resource,
                "ChangeType": want.change_type,
                "Nonce": nonce,
            }
        )
    if set(sub_rows[0]) != set(real) or set(nonce_rows[0]) != set(real_nonce):
        raise RuntimeError("GraphState rows changed shape: update the bench's seeding")
    with fake.subs.lock:
        for sub in subs:
            fake.subs.subscriptions[sub.id] = sub
    table.upsert_batch(nonce_rows)
    table.upsert_batch(sub_rows)


def renewal(stores: Stores, counter: RequestCounter, base: str) -> dict[str, Any]:
    with FakeGraph() as fake, environment(fake.ca_env()):
        fake.add_app(TENANT, APP, APP_SECRET)
        started = time.perf_counter()
        users = {f"mb{i:05d}": f"user{i:05d}@contoso.example" for i in range(MAILBOXES)}
        user_ids = {user: fake.add_user(user, tenant=TENANT) for user in users.values()}
        # The app's config model, without the YAML parse (7 s for 10,000 mailboxes).
        config = Config.model_validate(config_data(users, fake, base))
        fresh_state(stores)
        created_at = datetime.now(UTC)
        first = maintain(config, stores, created_at, only=FIRST)
        if first.created != 1 or first.failed:
            raise RuntimeError(f"subscribing {FIRST} failed: {first}")
        seed(fake, config, stores, user_ids)
        # A copy maintain would not take as current would be created anew (two handshakes
        # each): check one before the pass.
        check = maintain(config, stores, created_at, only="mb00001")
        if (check.created, check.renewed, check.failed) != (0, 0, []):
            raise RuntimeError(f"maintain does not take the seeded rows as current: {check}")
        setup = time.perf_counter() - started
        # Due: inside renew_before_minutes of the expiry, still before it.
        minutes = config.graph.subscription_minutes - config.graph.renew_before_minutes // 2
        due = created_at + timedelta(minutes=minutes)
        fake.clear_requests()
        counter.reset()
        started = time.perf_counter()
        summary = maintain(config, stores, due)
        elapsed = time.perf_counter() - started
        storage = counter.total
        renewed_in_fake = sum(1 for s in fake.subscriptions if s.renewed)
        return {
            "renewed": summary.renewed,
            "renewed_in_fake": renewed_in_fake,
            "failed": len(summary.failed),
            "other": summary.created + summary.recreated + summary.removed,
            "counted_batches": summary.batches,
            "batches": fake.count(r"/\$batch$", in_batch=False),
            "inner": fake.count(in_batch=True),
            "top_level": fake.count(in_batch=False),
            "storage": storage,
            "seconds": elapsed,
            "setup": setup,
        }


# --- main --------------------------------------------------------------------------------------


def serve(host: LocalHost, server_class: type[LocalHttpServer]) -> LocalHttpServer:
    server = server_class(("127.0.0.1", free_port()), host, route_prefix="api")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def base_of(server: LocalHttpServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/api"


def main() -> None:
    settings = {"GRAPH_APP_SECRET": APP_SECRET, "GRAPH_CLIENT_STATE_SECRET": CLIENT_STATE_SECRET}
    azurite = Azurite()
    azurite.start()
    try:
        with environment(settings), tempfile.TemporaryDirectory() as tmp:
            connection = azurite.connection_string
            counter = RequestCounter()
            stores = Stores.connect(StorageSettings(connection_string=connection), counter)
            stores.ensure()
            sys.path.insert(0, str(REPO))
            app = importlib.import_module("function_app")
            host = LocalHost(
                registered_functions(app),
                stores.queues,
                QueueSettings.from_host_json(REPO / "host.json"),
            )
            servers = [serve(host, LocalHttpServer)]
            try:
                config_file = Path(tmp, "mailfiler.yaml")
                assert azurite.process is not None
                hooks = webhook(
                    stores, connection, base_of(servers[0]), config_file, azurite.process.pid
                )
                runs = cold(connection, config_file)
                acts = actions_cost(stores, connection, base_of(servers[0]), config_file, host)
                renew = renewal(stores, counter, base_of(servers[0]))
            finally:
                set_context(None)
                for server in servers:
                    server.shutdown()
                    server.server_close()
    finally:
        azurite.stop()
    report(hooks, runs, renew)
    report_actions(acts)


def actions_only() -> None:
    """`python -m bench.bench_graph --actions`: part 3 alone."""
    settings = {"GRAPH_APP_SECRET": APP_SECRET, "GRAPH_CLIENT_STATE_SECRET": CLIENT_STATE_SECRET}
    azurite = Azurite()
    azurite.start()
    try:
        with environment(settings), tempfile.TemporaryDirectory() as tmp:
            connection = azurite.connection_string
            stores = Stores.connect(StorageSettings(connection_string=connection))
            stores.ensure()
            sys.path.insert(0, str(REPO))
            app = importlib.import_module("function_app")
            host = LocalHost(
                registered_functions(app),
                stores.queues,
                QueueSettings.from_host_json(REPO / "host.json"),
            )
            server = serve(host, LocalHttpServer)
            try:
                acts = actions_cost(
                    stores, connection, base_of(server), Path(tmp, "mailfiler.yaml"), host
                )
            finally:
                set_context(None)
                server.shutdown()
                server.server_close()
    finally:
        azurite.stop()
    report_actions(acts)


def report_actions(acts: dict[str, Any]) -> None:
    per_mail = acts["calls"] / acts["mails"]
    print(
        f"\ngraph after-filing actions: {acts['mails']} mails (mark read, category, move to "
        f"{AFTER_FILING['move_to']}), notifications delivered {acts['arrived']} (20% twice)"
    )
    print(f"{'':<44}{'value':>8}{'goal':>8}")
    print(f"{'Graph calls per filed mail':<44}{per_mail:>8.2f}{'<= 4':>8}")
    print(
        f"{'fetches per notification of our own change':<44}"
        f"{acts['idle_fetches'] / max(acts['echoes'], 1):>8.2f}{'0':>8}"
    )
    print(
        f"calls by kind: {dict(sorted(acts['kinds'].items()))}; moved {acts['moved']} of "
        f"{acts['mails']}; our own changes came back as {acts['echoes']} notifications and "
        f"cost {acts['idle_calls']} Graph calls"
    )


def report(hooks: list[dict[str, Any]], runs: list[dict[str, Any]], renew: dict[str, Any]) -> None:
    print(
        f"\ngraph webhook: {POSTS} POSTs of {NOTIFICATIONS} notifications "
        f"({hooks[0]['body'] / 1024:.0f} KiB of JSON) per run after {WARM_UP} to warm up, local "
        "host over HTTP "
        f"(goal p99 <= {GOALS['webhook_p99_ms']:.0f} ms at {CONCURRENCY} in flight)"
    )
    print(
        f"{'load':<7}{'in flight':>10}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'not 202':>9}"
        f"{'POSTs/s':>9}{'CPU ms per POST: load':>23}{'server':>8}{'azurite':>9}"
        f"{'queue msgs':>12}{'mean msg B':>12}"
    )
    for hook in hooks:
        ms = [s * 1000 for s in hook["latencies"]]
        not_202 = sum(1 for status in hook["statuses"] if status != 202)
        mean = statistics.mean(hook["sizes"]) if hook["sizes"] else 0.0
        azurite = hook["azurite_cpu"]
        print(
            f"{hook['client']:<7}{hook['concurrency']:>10}{percentile(ms, 50):>8.0f}"
            f"{percentile(ms, 99):>8.0f}{max(ms):>8.0f}{not_202:>9}{POSTS / hook['wall']:>9.1f}"
            f"{hook['cpu'] / POSTS * 1000:>23.2f}{hook['server_cpu'] / POSTS * 1000:>8.2f}"
            f"{'n/a' if azurite is None else f'{azurite / POSTS * 1000:.2f}':>9}"
            f"{hook['messages']:>12}{mean:>12.0f}"
        )
    for hook in hooks:
        statuses = Counter(str(s) for s in hook["statuses"])
        print(
            f"{hook['client']} {hook['concurrency']}: answers {dict(sorted(statuses.items()))}; "
            f"queue messages carry {hook['carried']} notifications"
        )
    work = hooks[0]["work"]
    parse, compress, size = work["parse"], work["compress"], work["bytes"]
    print(
        f"one POST, parse: json {parse['json']:.3f} ms, orjson {parse['orjson']:.3f} ms (used, "
        f"{parse['json'] / parse['orjson']:.1f}x faster); compress at level 1: zlib "
        f"{compress['zlib']:.3f} ms ({size['zlib']} B), isal {compress['isal']:.3f} ms "
        f"({size['isal']} B, used, {compress['zlib'] / compress['isal']:.1f}x faster)"
    )
    print(
        "latency: client side, request written to whole answer read, from a separate load "
        "process on the same machine (one Python process serves; Azure scales out instances).\n"
        "load raw: one thread, non-blocking keep-alive sockets (bench/loadgen.py); load httpx: "
        "one thread per POST in flight, whose CPU competes with the server's for the cores"
    )

    walls = [r["wall"] for r in runs]
    imports = [r["import"] for r in runs]
    calls = [r["call"] * 1000 for r in runs]
    answers = Counter(
        f"{r['status']} {r['mimetype']}{'' if r['echoed'] else ' (token not echoed)'}" for r in runs
    )
    print(f"\ngraph validation from a cold process ({COLD_RUNS} fresh interpreters)")
    print(f"{'':<28}{'min':>8}{'median':>8}{'max':>8}{'goal':>8}")
    for name, values, digits, goal in (
        ("spawn to answer (s)", walls, 2, f"{GOALS['validation_s']:.1f}"),
        ("import function_app (s)", imports, 2, ""),
        ("index + call (ms)", calls, 1, ""),
    ):
        print(
            f"{name:<28}{min(values):>8.{digits}f}{statistics.median(values):>8.{digits}f}"
            f"{max(values):>8.{digits}f}{goal:>8}"
        )
    print(f"answers: {dict(answers)}")

    print(f"\ngraph subscription renewal cycle, {MAILBOXES:,} mailboxes (one app, one tenant)")
    print(
        f"{'renewed':>8}{'$batch':>8}{'goal':>6}{'ratio':>7}{'inner':>8}{'other':>7}"
        f"{'graph total':>13}{'storage':>9}{'seconds':>9}"
    )
    other = renew["top_level"] - renew["batches"]
    print(
        f"{renew['renewed']:>8}{renew['batches']:>8}{GOALS['batches']:>6}"
        f"{renew['batches'] / GOALS['batches']:>7.2f}{renew['inner']:>8}{other:>7}"
        f"{renew['inner'] + renew['top_level']:>13}{renew['storage']:>9}{renew['seconds']:>9.1f}"
    )
    print(
        "$batch: top-level POST /$batch; inner: requests inside them; other: other top-level "
        "requests (tokens; the `GET /subscriptions` listing that finds strays); storage: Azurite "
        "calls of the pass"
    )
    print(
        f"maintain counted {renew['counted_batches']} batches; renewed in the fake "
        f"{renew['renewed_in_fake']}; failed {renew['failed']}; created/recreated/removed "
        f"{renew['other']}; setup (users, 1 real subscription, copies) {renew['setup']:.0f} s"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        load_child()
    elif sys.argv[1:2] == ["--actions"]:
        actions_only()
    else:
        main()
