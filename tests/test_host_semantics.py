"""The local host keeps the Functions contract: routes, timers, queue retries, host.json."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
import types
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import azure.functions as func
import pytest

from shared.cli.azurite import REPO
from shared.cli.host import (
    LocalHost,
    QueueSettings,
    Registered,
    _parse_timespan,
    registered_functions,
)
from shared.cli.local_http import route_regex
from shared.store.stores import Stores

from .serving import serve_api


def test_host_json_queue_settings_are_read() -> None:
    settings = QueueSettings.from_host_json(REPO / "host.json")
    assert settings == QueueSettings(
        batch_size=8,
        new_batch_threshold=4,
        max_dequeue_count=5,
        max_polling_interval=2.0,
        visibility_timeout=30.0,
        message_encoding="base64",
    )
    assert _parse_timespan("1.02:00:30", 0) == 86400 + 7200 + 30


def test_an_apps_functions_can_be_listed_again() -> None:
    # azure.functions raises on a second get_functions() of one app; the benches and tests
    # each ask for function_app's.
    app = func.FunctionApp()

    @app.timer_trigger(schedule="0 0 * * * *", arg_name="timer")
    def tick(timer: func.TimerRequest) -> None:
        pass

    module = types.ModuleType("some_app")
    setattr(module, "app", app)  # noqa: B010 (a module built at run time)
    first = registered_functions(module)
    again = registered_functions(module)
    assert [f.name for f in first] == [f.name for f in again] == ["tick"]
    assert again[0].call is first[0].call


def test_route_templates_capture_parameters() -> None:
    regex = route_regex("records/{type}/{id:int}")
    match = regex.match("records/case/42")
    assert match is not None and match.groupdict() == {"type": "case", "id": "42"}
    assert regex.match("records/case") is None


def test_http_functions_get_route_params_query_and_body() -> None:
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        body = {
            "params": dict(req.params),
            "route": dict(req.route_params),
            "body": req.get_body().decode(),
            "method": req.method,
        }
        return func.HttpResponse(json.dumps(body), status_code=201, mimetype="application/json")

    fn = Registered(
        "echo", {"type": "httpTrigger", "route": "things/{id}", "methods": ["POST"]}, echo
    )
    with serving(fn) as port:
        url = f"http://127.0.0.1:{port}/api/things/7?x=1"
        request = urllib.request.Request(url, data=b"hello", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
            assert response.headers["Content-Type"] == "application/json"
            got = json.loads(response.read())
        assert got == {
            "params": {"x": "1"},
            "route": {"id": "7"},
            "body": "hello",
            "method": "POST",
        }
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)  # GET is not among the methods
        assert info.value.code == 405 and info.value.headers["Allow"] == "POST"


def test_timers_fire_on_their_ncrontab_schedule() -> None:
    fired: list[bool] = []
    fn = Registered(
        "tick",
        {"type": "timerTrigger", "schedule": "*/1 * * * * *"},
        lambda timer: fired.append(timer.past_due),
    )
    host = LocalHost([fn], queues=None, settings=QueueSettings())  # type: ignore[arg-type]
    host.start(queues=False, fire_timers_now=False)
    time.sleep(2.6)
    host.stop()
    assert 2 <= len(fired) <= 4
    assert not any(fired)


@pytest.mark.azurite
def test_failing_queue_function_is_retried_then_poisoned(stores: Stores) -> None:
    queue = "hosttest"
    stores.queues.create(queue)
    stores.queues.create(f"{queue}-poison")
    stores.queues.clear(queue)
    stores.queues.clear(f"{queue}-poison")
    seen: list[tuple[bytes, int]] = []

    def always_fails(msg: func.QueueMessage) -> None:
        seen.append((msg.get_body(), msg.dequeue_count or 0))
        raise RuntimeError("boom")

    fn = Registered("fails", {"type": "queueTrigger", "queueName": queue}, always_fails)
    settings = QueueSettings(batch_size=4, max_dequeue_count=3, visibility_timeout=0)
    host = LocalHost([fn], stores.queues, settings, lease_seconds=30)
    stores.queues.send_bytes(queue, b'{"hello": "world"}')
    host.drain(timeout=60)
    assert seen == [
        (b'{"hello": "world"}', 1),
        (b'{"hello": "world"}', 2),
        (b'{"hello": "world"}', 3),
    ]
    assert stores.queues.peek(f"{queue}-poison") == [b'{"hello": "world"}']
    assert stores.queues.depth(queue) == 0


@pytest.mark.azurite
def test_queue_function_that_succeeds_deletes_its_message(stores: Stores) -> None:
    got: list[Any] = []
    fn = Registered(
        "ok",
        {"type": "queueTrigger", "queueName": "hosttest"},
        lambda msg: got.append(msg.get_json()),
    )
    stores.queues.create("hosttest")
    stores.queues.clear("hosttest")
    host = LocalHost([fn], stores.queues, QueueSettings(batch_size=2))
    for i in range(5):
        stores.queues.send_bytes("hosttest", json.dumps({"n": i}).encode())
    assert host.drain(timeout=60) == {"hosttest": 5}
    assert sorted(g["n"] for g in got) == [0, 1, 2, 3, 4]
    assert stores.queues.depth("hosttest") == 0


@pytest.mark.azurite
def test_the_next_batch_starts_while_a_slow_message_still_runs(stores: Stores) -> None:
    # As the Functions host's newBatchThreshold: once no more than the threshold's messages
    # still run, the next batch is received; a slow message holds up none of the others.
    queue = "hosttest-threshold"
    stores.queues.create(queue)
    stores.queues.clear(queue)
    others_done = threading.Event()
    lock = threading.Lock()
    state = {"running": 0, "most": 0, "done": 0, "first": True}
    total = 12

    def handler(msg: func.QueueMessage) -> None:
        with lock:
            first, state["first"] = state["first"], False
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
        try:
            if first:  # the slow one: it ends only after every other message has ended
                others_done.wait(60)
            else:
                with lock:
                    state["done"] += 1
                    if state["done"] == total - 1:
                        others_done.set()
        finally:
            with lock:
                state["running"] -= 1

    fn = Registered("slow", {"type": "queueTrigger", "queueName": queue}, handler)
    settings = QueueSettings(batch_size=4, new_batch_threshold=2, max_polling_interval=0.2)
    host = LocalHost([fn], stores.queues, settings, lease_seconds=120)
    for i in range(total):
        stores.queues.send_bytes(queue, json.dumps({"n": i}).encode())
    host.start(timers=False)
    try:
        finished = others_done.wait(60)
    finally:
        host.stop()
    assert finished, f"only {state['done']} of the others ran while the slow one waited"
    assert host.processed == {queue: total}
    assert state["most"] <= settings.batch_size + settings.threshold
    assert stores.queues.depth(queue) == 0


@contextmanager
def serving(*fns: Registered) -> Iterator[int]:
    """A LocalHttpServer for `fns` on a free port; stopped and closed afterwards."""
    host = LocalHost(list(fns), queues=None, settings=QueueSettings())  # type: ignore[arg-type]
    with serve_api(host) as served:
        yield served.port


def test_connections_are_kept_alive_and_functions_run_on_the_invocation_pool() -> None:
    threads: list[str] = []

    def echo(req: func.HttpRequest) -> func.HttpResponse:
        threads.append(threading.current_thread().name)
        return func.HttpResponse(req.get_body(), status_code=200)

    fn = Registered("echo", {"type": "httpTrigger", "route": "echo", "methods": ["POST"]}, echo)
    with serving(fn) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        sockets = []
        for body in (b"one", b"x" * 200_000, b""):
            conn.request("POST", "/api/echo", body=body)
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == body
            assert not response.will_close
            sockets.append(conn.sock)
        conn.close()
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3  # one connection
    assert len(threads) == 3 and all(name.startswith("invoke") for name in threads)


def test_async_functions_are_awaited_on_the_loop_and_hold_no_thread_while_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "1")
    threads: set[str] = set()
    inside = 0
    most = 0

    async def wait(req: func.HttpRequest) -> func.HttpResponse:
        nonlocal inside, most
        threads.add(threading.current_thread().name)
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.3)
        inside -= 1
        return func.HttpResponse(b"waited", status_code=200)

    fn = Registered("wait", {"type": "httpTrigger", "route": "wait", "methods": ["GET"]}, wait)
    with serving(fn) as port:

        def call(_: int) -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/wait", timeout=10) as r:
                return bytes(r.read())

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(8)))
    assert answers == [b"waited"] * 8
    # All eight waited at once, with one invocation thread: none of them held it.
    assert most == 8
    assert len(threads) == 1 and not any(name.startswith("invoke") for name in threads)


def test_queue_and_timer_functions_may_be_async_too() -> None:
    ran: list[str] = []

    async def tick(timer: func.TimerRequest) -> None:
        await asyncio.sleep(0)
        ran.append(f"past_due={timer.past_due}")

    fn = Registered("tick", {"type": "timerTrigger", "schedule": "0 0 * * * *"}, tick)
    host = LocalHost([fn], queues=None, settings=QueueSettings())  # type: ignore[arg-type]
    host.fire_timer(fn, past_due=True)
    assert ran == ["past_due=True"]


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_bad_requests_get_400_a_raising_function_500_and_http_1_0_a_closed_connection() -> None:
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("the function failed")

    def ok(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    fns = [
        Registered("boom", {"type": "httpTrigger", "route": "boom", "methods": ["GET"]}, boom),
        Registered("ok", {"type": "httpTrigger", "route": "ok", "methods": ["GET"]}, ok),
    ]
    with serving(*fns) as port:
        assert exchange(port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        host = f"Host: 127.0.0.1:{port}".encode()
        huge = b"GET /api/ok HTTP/1.1\r\n" + host + b"\r\nContent-Length: 200000000\r\n\r\n"
        assert exchange(port, huge).startswith(b"HTTP/1.1 413 ")  # over the host's 100 MB
        failing = b"GET /api/boom HTTP/1.1\r\n" + host + b"\r\nConnection: close\r\n\r\n"
        failed = exchange(port, failing)
        assert failed.startswith(b"HTTP/1.1 500 ") and failed.endswith(b"internal error")
        # An HTTP/1.0 caller gets its answer, then the connection closes (exchange returns).
        old = exchange(port, b"GET /api/ok HTTP/1.0\r\n\r\n")
        assert old.startswith(b"HTTP/1.1 200 ") and old.endswith(b"\r\n\r\nok")


def test_no_content_answers_carry_no_body_and_a_caller_that_leaves_mid_body_is_let_go() -> None:
    def empty(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("a stray body", status_code=204)

    fn = Registered("empty", {"type": "httpTrigger", "route": "empty", "methods": ["GET"]}, empty)
    with serving(fn) as port:
        host = f"Host: 127.0.0.1:{port}".encode()
        get = b"GET /api/empty HTTP/1.1\r\n" + host + b"\r\nConnection: close\r\n\r\n"
        answer = exchange(port, get)
        assert answer.startswith(b"HTTP/1.1 204 ")
        assert answer.endswith(b"\r\n\r\n") and b"content-length" not in answer.lower()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /api/empty HTTP/1.1\r\n" + host + b"\r\nContent-Length: 100\r\n\r\n12"
            )
        # The server still answers the next caller.
        again = exchange(port, get)
        assert again.startswith(b"HTTP/1.1 204 ")


def answer_of(port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """Status and JSON body (or raw bytes) of one request with exactly these headers."""
    lines = [f"{method} {path} HTTP/1.1", "Connection: close", "Content-Length: 0"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    raw = exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"access-control-allow" not in head.lower()  # never any CORS
    return status, json.loads(body) if body.startswith(b"{") else body


def test_a_foreign_host_or_a_cross_site_origin_is_refused_on_every_path() -> None:
    """DNS rebinding (a page on evil.example whose name now points at 127.0.0.1) and CSRF (a
    page elsewhere posting to 127.0.0.1) reach no function, the admin API included."""
    called: list[str] = []

    def ok(req: func.HttpRequest) -> func.HttpResponse:
        called.append(req.method)
        return func.HttpResponse("ok")

    def tick(timer: func.TimerRequest) -> None:
        called.append("tick")

    fns = [
        Registered("ok", {"type": "httpTrigger", "route": "ok", "methods": ["GET", "POST"]}, ok),
        Registered("tick", {"type": "timerTrigger", "schedule": "0 0 0 1 1 *"}, tick),
    ]
    with serving(*fns) as port:
        ours = f"127.0.0.1:{port}"
        refused = [
            ({"Host": f"evil.example:{port}"}, 421, "misdirected"),
            ({"Host": "127.0.0.1"}, 421, "misdirected"),  # another port: another origin
            ({"Host": f"127.0.0.1:{port + 1}"}, 421, "misdirected"),
            ({"Host": f"пример.рф:{port}"}, 421, "misdirected"),
            ({"Host": ours, "Origin": "http://evil.example"}, 403, "cross_origin"),
            ({"Host": ours, "Origin": "null"}, 403, "cross_origin"),
            ({"Host": ours, "Origin": f"https://{ours}"}, 403, "cross_origin"),
            ({"Host": ours, "Origin": f"http://localhost:{port + 1}"}, 403, "cross_origin"),
            ({"Host": ours, "Sec-Fetch-Site": "cross-site"}, 403, "cross_origin"),
            ({"Host": ours, "Sec-Fetch-Site": "same-site"}, 403, "cross_origin"),
        ]
        for headers, status, code in refused:
            for method, path in (
                ("GET", "/api/ok"),
                ("POST", "/api/ok"),
                ("POST", "/admin/functions/tick"),
            ):
                got, body = answer_of(port, method, path, headers)
                assert (got, body) == (
                    status,
                    {"error": {"code": code, "message": body["error"]["message"]}},
                )
        time.sleep(0.2)  # a timer the admin API started would have run by now
        assert called == []

        allowed = [
            {"Host": ours},
            {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"},
            {"Host": f"LOCALHOST:{port}", "Sec-Fetch-Site": "same-origin"},
            {"Host": ours, "Origin": f"http://{ours}", "Sec-Fetch-Site": "none"},
        ]
        for headers in allowed:
            assert answer_of(port, "GET", "/api/ok", headers) == (200, b"ok")
        assert answer_of(port, "POST", "/admin/functions/tick", {"Host": ours})[0] == 202
        deadline = time.monotonic() + 5
        while "tick" not in called and time.monotonic() < deadline:
            time.sleep(0.05)
        assert called.count("GET") == 4 and called.count("tick") == 1
        # An unknown route answers the API's error body too.
        assert answer_of(port, "GET", "/api/nothing", {"Host": ours})[0] == 404
