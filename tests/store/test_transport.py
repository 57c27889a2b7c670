"""The storage clients' urllib3 transport (shared/store/transport.py) against real HTTP: Azurite,
and a loopback server in front of it that resets connections, answers 503 and 429, cuts bodies
short or stalls. Each fault scenario runs over the new transport and over azure-core's
RequestsTransport (the old one): the SDKs' retries must see the same thing from both."""

from __future__ import annotations

import http.client
import io
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.core.rest import HttpRequest

from shared.cli.azurite import Azurite, connection_string
from shared.store.account import (
    CONNECT_TIMEOUT,
    DATA_BLOCK_BYTES,
    READ_TIMEOUT,
    Http,
    RequestCounter,
    StorageSettings,
)
from shared.store.blobs import BLOCK_BYTES
from shared.store.stores import Stores
from shared.store.transport import Connections, Urllib3Transport, _header_block

pytestmark = pytest.mark.azurite
HTTPS: tuple[Http, ...] = ("urllib3", "requests")


@dataclass
class FaultProxy:
    """A loopback HTTP server that forwards to `target` (an Azurite port), first playing
    `script` (one action per request: reset, 503, 429, short, stall, pass), then passing."""

    target: int
    script: list[str] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, action)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def next_action(self, method: str, path: str) -> str:
        with self._lock:
            action = self.script.pop(0) if self.script else "pass"
            self.seen.append((method, path.split("?", 1)[0], action))
            return action

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy.next_action(self.command, self.path)
                if action == "reset":  # RST instead of an answer
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if action == "stall":
                    time.sleep(1.5)
                if action in ("503", "429"):
                    status = int(action)
                    error = (
                        b"<?xml version='1.0'?><Error><Code>ServerBusy</Code>"
                        b"<Message>injected</Message></Error>"
                    )
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.end_headers()
                    self.wfile.write(error)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target, timeout=10)
                headers = {k: v for k, v in self.headers.items()}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                if action == "short":  # promise the whole body, send half, hang up
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_MERGE = do_PATCH = handle_one

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a connection the script reset: nothing to report

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def proxies(azurite: Azurite) -> Iterator[tuple[FaultProxy, FaultProxy, FaultProxy]]:
    servers = tuple(FaultProxy(port) for port in azurite.ports)
    for server in servers:
        server.start()
    yield servers  # type: ignore[misc]
    for server in servers:
        server.stop()


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The SDKs' retry back-offs, recorded and not slept (they go through the transport's
    `sleep`, azure-core's, which both transports inherit): queue and blob back off 15 s."""
    slept: list[float] = []
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: slept.append(duration))
    return slept


def through(proxies: tuple[FaultProxy, ...], http: Http, counter: RequestCounter) -> Stores:
    blob, queue, table = (p.port for p in proxies)
    settings = StorageSettings(connection_string=connection_string(blob, queue, table))
    return Stores.connect(settings, counter, http=http)


def test_the_default_transport_is_urllib3(stores: Stores) -> None:
    account = stores.account
    transports: list[Any] = [
        account.tables._client._client._pipeline._transport,
        account.queues._pipeline._transport,
        account.blobs._pipeline._transport,
    ]
    assert all(isinstance(t, Urllib3Transport) for t in transports)
    assert len({id(t.session) for t in transports}) == 1  # one set of pools for the three
    for transport in transports:  # the account's, not azure-core's 300 s (test_timeouts.py)
        config = transport.connection_config
        assert (config.timeout, config.read_timeout) == (CONNECT_TIMEOUT, READ_TIMEOUT)
        assert config.data_block_size == DATA_BLOCK_BYTES  # not azure-core's 4 KiB


def test_a_blob_over_a_block_is_uploaded_and_streamed_back_in_chunks(
    stores: Stores, counter: RequestCounter
) -> None:
    data = os.urandom(BLOCK_BYTES * 2 + 12345)
    name = stores.blobs.put_raw(data)
    counter.reset()
    assert stores.blobs.get(name) == data
    assert counter.total == 3  # 4 MiB, 4 MiB and the rest: streamed in chunks, not one get
    assert stores.blobs.get("missing.eml") is None


def outcome(call: Any, *args: Any) -> Any:
    """What a call returned, or the name of what it raised."""
    try:
        return call(*args)
    except Exception as exc:  # the comparison is the point: whatever it was
        return type(exc).__name__


@pytest.mark.parametrize("fault", ["reset", "503", "429", "short"])
def test_faults_are_retried_as_by_the_old_transport(
    stores: Stores,
    proxies: tuple[FaultProxy, FaultProxy, FaultProxy],
    backoffs: list[float],
    fault: str,
) -> None:
    """One fault before each service's call: the same attempts, back-offs and outcomes over
    both transports; a reset and a 503 are retried and the calls succeed."""
    stores.table("Faults").create()
    stores.table("Faults").upsert({"PartitionKey": "p", "RowKey": "r", "Text": "x" * 5000})
    stores.queues.create("faults")
    name = stores.blobs.put_raw(b"y" * 5000)
    seen: dict[str, tuple[Any, ...]] = {}
    for kind in HTTPS:
        counter = RequestCounter()
        faulty = through(proxies, kind, counter)
        for proxy in proxies:
            proxy.script, proxy.seen = [fault], []
        backoffs.clear()

        row = outcome(faulty.table("Faults").get, "p", "r")
        sent = outcome(faulty.queues.send_bytes, "faults", b"hello")
        raw = outcome(faulty.blobs.get, name)

        received = stores.queues.receive("faults", max_messages=32, visibility_timeout=30)
        for message in received:
            stores.queues.delete("faults", message)
        actions = [[action for _, _, action in p.seen] for p in proxies]
        seen[kind] = (row, sent, raw, len(received), actions, counter.snapshot(), len(backoffs))
    assert seen["urllib3"] == seen["requests"]
    if fault in ("reset", "503"):
        row, sent, raw, messages, actions, calls, _ = seen["urllib3"]
        assert isinstance(row, dict) and row["Text"] == "x" * 5000
        assert (sent, raw, messages) == (None, b"y" * 5000, 1)
        assert actions == [[fault, "pass"]] * 3
        assert calls == {"table": 2, "queue": 2, "blob": 2}
    if fault == "429":  # as azure-storage 12.x has it: tables retry a 429, queues and blobs not
        assert seen["urllib3"][1:3] == ("HttpResponseError", "HttpResponseError")
        assert seen["urllib3"][5] == {"table": 2, "queue": 1, "blob": 1}
    if fault == "short":  # the answer was cut, the message was queued: sent again, twice there
        assert seen["urllib3"][2:4] == (b"y" * 5000, 2)


@pytest.mark.parametrize("http", HTTPS)
def test_a_table_write_whose_connection_resets_fails_as_before(
    stores: Stores,
    proxies: tuple[FaultProxy, FaultProxy, FaultProxy],
    backoffs: list[float],
    http: Http,
) -> None:
    """A POST is not retried by the tables SDK when the answer never came (it may have been
    written): the caller sees it, over both transports."""
    stores.table("Faults").create()
    faulty = through(proxies, http, RequestCounter())
    proxies[2].script = ["reset"]
    with pytest.raises(ServiceResponseError):
        faulty.table("Faults").insert({"PartitionKey": "p", "RowKey": "new"})
    assert [action for _, _, action in proxies[2].seen] == ["reset"]
    assert backoffs == []


@pytest.mark.parametrize("http", HTTPS)
def test_errors_that_outlast_the_retries_reach_the_caller(
    stores: Stores,
    proxies: tuple[FaultProxy, FaultProxy, FaultProxy],
    backoffs: list[float],
    http: Http,
) -> None:
    stores.queues.create("faults")
    faulty = through(proxies, http, RequestCounter())
    proxies[1].script = ["503"] * 10
    with pytest.raises(HttpResponseError) as raised:
        faulty.queues.send_bytes("faults", b"hello")
    assert raised.value.status_code == 503
    assert len(proxies[1].seen) == 4  # the first try and 3 retries (ExponentialRetry's total)
    assert len(backoffs) == 3  # queue and blob back off before every retry


def transport_of(http: Http, **kwargs: Any) -> HttpTransport[Any, Any]:
    if http == "urllib3":
        return Urllib3Transport(**kwargs)
    return RequestsTransport(**kwargs)  # type: ignore[no-any-return]


@pytest.mark.parametrize("http", HTTPS)
def test_a_stalled_answer_times_out_and_a_refused_connection_is_a_request_error(
    proxies: tuple[FaultProxy, FaultProxy, FaultProxy], http: Http
) -> None:
    proxy = proxies[0]
    proxy.script = ["stall"]
    with transport_of(http, read_timeout=0.3) as transport:
        with pytest.raises(ServiceResponseTimeoutError):
            transport.send(HttpRequest("GET", f"http://127.0.0.1:{proxy.port}/devstoreaccount1"))
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens there
        with pytest.raises(ServiceRequestError):
            transport.send(HttpRequest("GET", f"http://127.0.0.1:{port}/"))


def test_proxies_and_bypass_rules_are_read_once_and_applied_per_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.table.core.windows.net")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    connections = Connections()
    monkeypatch.delenv("HTTPS_PROXY")  # read once: a later change is not seen
    via = connections.manager("https://acct.blob.core.windows.net/raw/x")
    assert str(getattr(via, "proxy", None)) == "http://proxy.internal:3128"
    assert via.connection_pool_kw["ca_certs"] == "/etc/ssl/corp.pem"
    direct = connections.manager("https://acct.table.core.windows.net/Records")
    assert getattr(direct, "proxy", None) is None
    assert connections.manager("http://127.0.0.1:10000/x") is direct  # http: no proxy set
    assert connections.manager("https://other.example/") is via


def test_without_proxies_every_host_goes_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    connections = Connections()
    manager = connections.manager("https://acct.blob.core.windows.net/raw/x")
    assert getattr(manager, "proxy", None) is None
    assert manager.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    assert manager.connection_pool_kw["ca_certs"].endswith(".pem")  # certifi's, as requests


@pytest.mark.parametrize(
    "block",
    [
        b"Content-Type: application/json\r\nETag: W/\"datetime'2026-12-07T21%3A50Z'\"\r\n\r\n",
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nx-ms-meta-empty:\r\nX-Odd:   spaced \r\n\r\n",
        b"X-Folded: one\r\n  two\r\n\tthree\r\nDate: Mon, 07 Dec 2026 21:50:00 GMT\r\n\r\n",
        b"Location: caf\xe9\r\nx-ms-request-id: 1\r\n\r\n",  # Latin-1 on the wire
        b"\r\n",
    ],
)
def test_headers_are_read_as_http_client_reads_them(block: bytes) -> None:
    """The transport's header reader (no email parser) gives what http.client's gives."""
    ours = _header_block(io.BufferedReader(io.BytesIO(block + b"body")))
    theirs = http.client.parse_headers(io.BufferedReader(io.BytesIO(block + b"body")))
    assert ours.items() == theirs.items()
    assert ours.get_all("set-cookie") == theirs.get_all("set-cookie")
