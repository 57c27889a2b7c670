"""Downstream events on Azurite, delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from shared.cli.azurite import Azurite
from shared.cli.events_cmd import cmd_list_dead, cmd_replay
from shared.cli.host import LocalHost, Registered, registered_functions
from shared.core.config import parse_config
from shared.core.contracts import Event, PoisonMessage, RecordRef
from shared.functions import events as events_functions
from shared.services.context import AppContext, set_context
from shared.services.events import emit
from shared.services.webhooks import DELIVERY_QUEUE, Delivery
from shared.settings import AppSettings
from shared.stages import deliveries as delivery
from shared.stages.deliveries import backoff_seconds, parse_retry_after
from shared.stages.polls import poll_all
from shared.store.queues import decode
from shared.store.stores import DELIVERY_LOG, Stores, poison
from tests.fakes.harness import HttpServer, OneServer
from tests.fakes.harness import Reply as Answer

from .conftest import SAMPLES
from .helpers import app_functions, local_host

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SETTING = "MAILFILER_TEST_WEBHOOK_SECRET"
SECRET = "whsec-test-4f1c"
CONSUMER_QUEUE = "mailfiler-test-events"


# --- the receiver -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver(OneServer[HttpServer]):
    """A webhook consumer on the fakes' HTTP harness: answers each POST from :attr:`script`
    (else 200) after the reply's delay, and keeps every hit."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.hits: list[Hit] = []
        self.lock = threading.Lock()

    def make_server(self) -> HttpServer:
        return HttpServer(self._serve)

    @property
    def url(self) -> str:
        return self.running.base_url

    def _serve(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        reply = self.next_reply(Hit(path, headers, body, time.monotonic()))
        time.sleep(reply.delay)  # a client that gave up by then: the harness drops the answer
        return Answer(reply.status, b"ok", dict(reply.headers))

    def next_reply(self, hit: Hit) -> Reply:
        with self.lock:
            self.hits.append(hit)
            return self.script.pop(0) if self.script else Reply()

    def types(self) -> Counter[str]:
        return Counter(h.headers["x-mailfiler-event"] for h in self.hits)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


# --- the app ----------------------------------------------------------------------------------


def _event_functions() -> list[Registered]:
    """fan_out_events and deliver_events, from function_app once it registers them, else from
    an app of their own (a blueprint's functions may be built only once)."""
    registered = app_functions()
    names = {"fan_out_events", "deliver_events"}
    if names <= {f.name for f in registered}:
        return registered
    module = types.ModuleType("events_app")
    app = func.FunctionApp()
    app.register_functions(events_functions.bp)
    setattr(module, "app", app)  # noqa: B010 (a module built at run time)
    return registered + registered_functions(module)


_FUNCTIONS: list[Registered] = []


def host(stores: Stores) -> LocalHost:
    if not _FUNCTIONS:
        _FUNCTIONS.extend(_event_functions())
    h = local_host(stores.queues)
    h.functions = list(_FUNCTIONS)
    return h


@pytest.fixture
def clean(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Stores:
    for queue in (DELIVERY_QUEUE, poison(DELIVERY_QUEUE), CONSUMER_QUEUE):
        stores.queues.create(queue)
        stores.queues.clear(queue)
    monkeypatch.setenv(SETTING, SECRET)
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 0)
    return stores


BASE_CONFIG = """
record_types: [{name: case, prefix: CASE}, {name: task, prefix: TASK}]
mailboxes: [{name: support, kind: local, path: mail, record_type: case}]
"""


@pytest.fixture
def make_ctx(clean: Stores, azurite: Azurite, tmp_path: Path) -> Iterator[Any]:
    def make(events_yaml: str) -> AppContext:
        config = parse_config(BASE_CONFIG + events_yaml)
        settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
        ctx = AppContext(settings, config, tmp_path, clean)
        set_context(ctx)
        return ctx

    yield make
    set_context(None)


def hook_yaml(receiver: Receiver, *hooks: str, max_attempts: int = 8, queue: str = "") -> str:
    """`events:` with one webhook per `name[:extra yaml]` posting to <receiver>/<name>."""
    lines = ["events:", f"  max_attempts: {max_attempts}"]
    if queue:
        lines.append(f"  queue: {queue}")
    lines.append("  webhooks:" + ("" if hooks else " []"))
    for spec in hooks:
        name, _, extra = spec.partition(":")
        lines.append(
            f"    - {{name: {name}, url: '{receiver.url}/{name}', secret_setting: {SETTING}"
            f"{', ' + extra if extra else ''}}}"
        )
    return "\n".join(lines) + "\n"


def event(
    kind: str = "record.created", key: str = "k1", record_type: str = "case", n: int = 1
) -> Event:
    return Event(
        id=f"{kind}-{record_type}-{key}-{n}".replace(".", "_"),
        type=kind,
        occurred_at=NOW,
        record=RecordRef(type=record_type, key=key),
        display_id=f"{record_type.upper()}-{n}",
        data={"title": "Printer jammed"},
    )


def run(ctx: AppContext, *events: Event, timeout: float = 60.0) -> None:
    emit(ctx.stores, events)
    host(ctx.stores).drain(timeout=timeout)


def row(stores: Stores, ev: Event, hook: str) -> dict[str, Any]:
    found = stores.table(DELIVERY_LOG).get(ev.id, hook)
    assert found is not None
    return found


def verify(hit: Hit, secret: str = SECRET) -> bool:
    """What a receiver does (the README's snippet)."""
    timestamp = hit.headers["x-mailfiler-timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + hit.body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), hit.headers["x-mailfiler-signature"])


# --- tests ------------------------------------------------------------------------------------


def test_backoff_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 10)
    assert [backoff_seconds(a) for a in range(1, 10)] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560]
    assert backoff_seconds(10) == backoff_seconds(40) == 3600
    assert backoff_seconds(3, retry_after=7) == 7
    assert backoff_seconds(1, retry_after=86400) == 3600
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Tue, 24 Nov 2026 12:01:00 GMT", NOW) == 60
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_delivered_signed_with_headers(make_ctx: Any, receiver: Receiver) -> None:
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    ev = event()
    before = int(time.time())
    run(ctx, ev)
    assert len(receiver.hits) == 1
    hit = receiver.hits[0]
    assert hit.path == "/crm"
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["x-mailfiler-event"] == "record.created"
    assert hit.headers["x-mailfiler-delivery"] == ev.id
    assert before - 1 <= int(hit.headers["x-mailfiler-timestamp"]) <= time.time() + 1
    assert hit.headers["x-mailfiler-signature"].startswith("sha256=")
    assert verify(hit)
    assert not verify(hit, "another secret")
    assert Event.model_validate_json(hit.body) == ev
    done = row(ctx.stores, ev, "crm")
    assert done["Status"] == "delivered"
    assert done["Attempts"] == 1
    assert done["LastStatusCode"] == 200
    assert done["DeliveredAt"] is not None


def test_retries_with_increasing_delays(
    make_ctx: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 1)
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    receiver.script = [Reply(500), Reply(503)]
    ev = event()
    run(ctx, ev)
    assert len(receiver.hits) == 3
    assert all(verify(h) for h in receiver.hits)
    first, second = (b.at - a.at for a, b in zip(receiver.hits, receiver.hits[1:], strict=False))
    assert 0.9 <= first < second
    assert second >= 1.9
    done = row(ctx.stores, ev, "crm")
    assert (done["Status"], done["Attempts"], done["LastStatusCode"]) == ("delivered", 3, 200)


def test_retry_after_is_honoured(
    make_ctx: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Back-off alone would wait 10 minutes: only Retry-After lets this finish in time.
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 600)
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    receiver.script = [Reply(429, {"Retry-After": "1"})]
    ev = event()
    run(ctx, ev, timeout=15)
    assert len(receiver.hits) == 2
    assert receiver.hits[1].at - receiver.hits[0].at >= 0.9
    assert row(ctx.stores, ev, "crm")["Status"] == "delivered"


def test_timeout_is_retried(
    make_ctx: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "TIMEOUT_SECONDS", 0.3)
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    receiver.script = [Reply(200, delay=1.0)]
    ev = event()
    run(ctx, ev)
    assert len(receiver.hits) == 2
    assert row(ctx.stores, ev, "crm")["Attempts"] == 2


def test_dead_after_max_attempts_then_replayed(
    make_ctx: Any, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = make_ctx(hook_yaml(receiver, "crm", max_attempts=3))
    receiver.script = [Reply(500)] * 3
    ev = event()
    run(ctx, ev)
    assert len(receiver.hits) == 3
    dead = row(ctx.stores, ev, "crm")
    assert dead["Status"] == "dead"
    assert dead["Attempts"] == 3
    assert "gave up after 3 attempt(s); last: HTTP 500" in dead["Reason"]
    assert decode(dead["Delivery"], Delivery).event == ev

    capsys.readouterr()
    assert cmd_list_dead(ctx.stores, as_json=True) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["event"], d["webhook"], d["status_code"]) for d in listed] == [(ev.id, "crm", 500)]
    assert cmd_list_dead(ctx.stores, as_json=False) == 0
    assert ev.id in capsys.readouterr().out

    # The receiver has recovered (its script is used up: 200 from now on).
    assert cmd_replay(ctx.stores, ev.id, all_dead=False) == 0
    assert row(ctx.stores, ev, "crm")["Status"] == "replayed"
    host(ctx.stores).drain()
    assert len(receiver.hits) == 4
    done = row(ctx.stores, ev, "crm")
    assert (done["Status"], done["Attempts"]) == ("delivered", 1)
    assert "Reason" not in done
    capsys.readouterr()
    cmd_list_dead(ctx.stores, as_json=True)
    assert capsys.readouterr().out == ""
    assert cmd_replay(ctx.stores, None, all_dead=True) == 0  # nothing dead: nothing queued
    assert cmd_replay(ctx.stores, ev.id, all_dead=False) == 1
    assert cmd_replay(ctx.stores, None, all_dead=False) == 2


def test_replay_all(make_ctx: Any, receiver: Receiver) -> None:
    ctx = make_ctx(hook_yaml(receiver, "crm", max_attempts=1))
    receiver.script = [Reply(502), Reply(502)]
    evs = [event(key="a"), event(key="b")]
    run(ctx, *evs)
    assert {row(ctx.stores, e, "crm")["Status"] for e in evs} == {"dead"}
    assert cmd_replay(ctx.stores, None, all_dead=True) == 0
    host(ctx.stores).drain()
    assert {row(ctx.stores, e, "crm")["Status"] for e in evs} == {"delivered"}
    assert len(receiver.hits) == 4


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (410, "HTTP 410 Gone"),
        (404, "HTTP 404: the endpoint refused"),
        (400, "HTTP 400: the endpoint refused"),
        (302, "redirects are not followed"),
    ],
)
def test_permanent_answers_are_dead_at_once(
    make_ctx: Any, receiver: Receiver, status: int, reason: str
) -> None:
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    receiver.script = [Reply(status, {"Location": f"{receiver.url}/elsewhere"})]
    ev = event()
    run(ctx, ev)
    assert [h.path for h in receiver.hits] == ["/crm"]
    dead = row(ctx.stores, ev, "crm")
    assert (dead["Status"], dead["LastStatusCode"]) == ("dead", status)
    assert reason in dead["Reason"]


def test_unreachable_endpoint_is_retried_then_dead(make_ctx: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    ctx = make_ctx(
        "events:\n  max_attempts: 2\n  webhooks:\n"
        f"    - {{name: gone, url: 'http://127.0.0.1:{port}/x', secret_setting: {SETTING}}}\n"
    )
    ev = event()
    run(ctx, ev)
    dead = row(ctx.stores, ev, "gone")
    assert (dead["Status"], dead["Attempts"]) == ("dead", 2)
    assert "Connection" in dead["Reason"] and "LastStatusCode" not in dead


def test_missing_secret_is_dead_with_reason(
    make_ctx: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SETTING)
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    ev = event()
    run(ctx, ev)
    assert receiver.hits == []
    dead = row(ctx.stores, ev, "crm")
    assert dead["Status"] == "dead"
    assert f"app setting {SETTING} (secret) is not set" in dead["Reason"]


def test_filters_by_event_type_and_record_type(make_ctx: Any, receiver: Receiver) -> None:
    ctx = make_ctx(
        hook_yaml(
            receiver,
            "all",
            "filed:events: [message.filed]",
            "tasks:record_types: [task]",
            "newcases:events: [record.created], record_types: [case]",
        )
    )
    created_case = event("record.created", "c1", "case")
    filed_case = event("message.filed", "c1", "case")
    created_task = event("record.created", "t1", "task")
    run(ctx, created_case, filed_case, created_task)
    got = Counter((h.path, h.headers["x-mailfiler-delivery"]) for h in receiver.hits)
    assert got == Counter(
        [
            ("/all", created_case.id),
            ("/all", filed_case.id),
            ("/all", created_task.id),
            ("/filed", filed_case.id),
            ("/tasks", created_task.id),
            ("/newcases", created_case.id),
        ]
    )


def test_storage_queue_receives_the_event(make_ctx: Any, receiver: Receiver) -> None:
    ctx = make_ctx(hook_yaml(receiver, "crm", queue=CONSUMER_QUEUE))
    ev = event()
    run(ctx, ev)
    bodies = ctx.stores.queues.peek(CONSUMER_QUEUE)
    assert [decode(b, Event) for b in bodies] == [ev]
    assert len(receiver.hits) == 1


def test_storage_queue_alone(make_ctx: Any) -> None:
    ctx = make_ctx(f"events: {{queue: {CONSUMER_QUEUE}}}\n")
    ev = event("message.filed")
    run(ctx, ev)
    assert [decode(b, Event) for b in ctx.stores.queues.peek(CONSUMER_QUEUE)] == [ev]


def test_redelivered_event_is_not_posted_twice(make_ctx: Any, receiver: Receiver) -> None:
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    ev = event()
    run(ctx, ev)
    run(ctx, ev, ev)  # a redelivered plan emits the same event again
    assert len(receiver.hits) == 1
    assert row(ctx.stores, ev, "crm")["Status"] == "delivered"


def test_malformed_delivery_goes_to_poison(make_ctx: Any, receiver: Receiver) -> None:
    ctx = make_ctx(hook_yaml(receiver, "crm"))
    ctx.stores.queues.send_bytes(DELIVERY_QUEUE, b'{"v": 2}')
    host(ctx.stores).drain()
    poisoned = [decode(b, PoisonMessage) for b in ctx.stores.queues.peek(poison(DELIVERY_QUEUE))]
    assert [(p.stage, p.reason.startswith("malformed")) for p in poisoned] == [("deliver", True)]
    assert receiver.hits == []


def test_sample_mail_sends_events_end_to_end(
    clean: Stores, azurite: Azurite, receiver: Receiver, sample_dir: Path
) -> None:
    config_file = sample_dir.parent / "mailfiler.yaml"
    config_file.write_text(
        (SAMPLES / "mailfiler.yaml").read_text().replace("path: mail", f"path: {sample_dir}")
        + hook_yaml(receiver, "crm")
    )
    from shared.settings import load_config

    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(config_file)}
    )
    ctx = AppContext(settings, load_config(config_file), sample_dir.parent, clean)
    set_context(ctx)
    try:
        assert poll_all(ctx, NOW) == {"sample": "queued 8"}
        host(clean).drain()
    finally:
        set_context(None)
    types = receiver.types()
    # When a reply is filed before the mail it answers, the reply creates the record and the
    # first mail's fields (the billing route's) arrive as a record.updated: at most once each.
    updated = types.pop("record.updated", 0)
    assert types == Counter({"record.created": 4, "message.filed": 8})
    assert updated <= 1
    assert all(verify(h) for h in receiver.hits)
    ids = [h.headers["x-mailfiler-delivery"] for h in receiver.hits]
    assert len(set(ids)) == 12 + updated
    rows = list(clean.table(DELIVERY_LOG).all())
    assert len(rows) == 12 + updated and {r["Status"] for r in rows} == {"delivered"}
