"""Storage timeouts over real loopback TCP: a server that accepts every connection, reads the
request and never answers. Each storage call must give up after the account's read timeout
per attempt (not azure-core's 300 s), over both transports, with the SDKs' own retries."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseTimeoutError
from azure.core.pipeline.transport import HttpTransport

from shared.cli.azurite import connection_string
from shared.store.account import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    Http,
    RequestCounter,
    StorageAccount,
    StorageSettings,
)
from shared.store.stores import Stores

HTTPS: tuple[Http, ...] = ("urllib3", "requests")
BOUND = 20.0  # seconds: far under the 300 s default, far over the few seconds expected


class Silent:
    """Accepts, reads what is sent, never answers; counts the requests that reached it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.requests: list[bytes] = []  # each request's first line
        self.lock = threading.Lock()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
        except OSError:
            return
        with self.lock:
            self.requests.append(data.split(b"\r\n", 1)[0])
        # ...and nothing more: the connection stays open and silent until the client gives up.

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for conn in self.held:
                conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The SDKs' retry back-offs (azure-core's transport `sleep`), recorded, not slept: the
    queue and blob SDKs wait 15 s and more between attempts."""
    slept: list[float] = []
    monkeypatch.setattr(HttpTransport, "sleep", lambda self, duration: slept.append(duration))
    return slept


def stores_at(port: int, http: Http, counter: RequestCounter | None, **timeouts: Any) -> Stores:
    settings = StorageSettings(connection_string=connection_string(port, port, port))
    return Stores(StorageAccount(settings, counter=counter, http=http, **timeouts))


def fails_in_time(call: Any, *args: Any, **kwargs: Any) -> float:
    """Run `call`; it must raise the SDK's read timeout error. Returns the seconds it took."""
    started = time.monotonic()
    with pytest.raises(ServiceResponseTimeoutError):
        call(*args, **kwargs)
    return time.monotonic() - started


@pytest.mark.parametrize("http", HTTPS)
def test_the_transports_get_the_accounts_timeouts(http: Http) -> None:
    settings = StorageSettings(connection_string=connection_string(1, 2, 3))
    for counter in (None, RequestCounter()):
        account = StorageAccount(settings, counter=counter, http=http)
        transports: list[Any] = [
            account.tables._client._client._pipeline._transport,
            account.queues._pipeline._transport,
            account.blobs._pipeline._transport,
        ]
        for transport in transports:
            config = transport.connection_config
            assert (config.timeout, config.read_timeout) == (CONNECT_TIMEOUT, READ_TIMEOUT)
    assert (CONNECT_TIMEOUT, READ_TIMEOUT) == (10.0, 30.0)


@pytest.mark.parametrize("counted", [False, True], ids=["plain", "counted"])
@pytest.mark.parametrize("http", HTTPS)
def test_a_silent_server_fails_each_call_after_the_read_timeout_per_attempt(
    silent: Silent, backoffs: list[float], http: Http, counted: bool
) -> None:
    counter = RequestCounter() if counted else None
    stores = stores_at(silent.port, http, counter, read_timeout=0.5)
    table = stores.table("Silent")

    # Tables (azure-core's RetryPolicy): a GET is retried 3 times after a read timeout.
    took = fails_in_time(table.get, "p", "r")
    assert len(silent.requests) == 4 and all(r.startswith(b"GET ") for r in silent.requests)
    assert took < BOUND
    assert backoffs == [1.6, 3.2]  # none before the first retry, then 0.8 s doubling

    # ...a POST (an insert) is not: the row may have been written.
    silent.requests.clear()
    took = fails_in_time(table.insert, {"PartitionKey": "p", "RowKey": "r"})
    assert [r.split(b" ")[0] for r in silent.requests] == [b"POST"]
    assert took < BOUND

    # Queues and blobs (the storage SDKs' ExponentialRetry): 3 retries, any method.
    silent.requests.clear()
    backoffs.clear()
    took = fails_in_time(stores.queues.send_bytes, "silent", b"hello")
    assert len(silent.requests) == 4 and took < BOUND
    # 15 s + 3 s ** retry, +-3 s: about 18, 24 and 42 s.
    assert len(backoffs) == 3
    assert all(abs(b - (15 + 3**n)) <= 3 for n, b in enumerate(backoffs, 1)), backoffs
    silent.requests.clear()
    took = fails_in_time(stores.blobs.get, "some.eml")
    assert len(silent.requests) == 4 and took < BOUND
    if counter is not None:
        assert counter.snapshot() == {"table": 5, "queue": 4, "blob": 4}


@pytest.mark.parametrize("http", HTTPS)
def test_a_per_request_read_timeout_still_overrides_the_accounts(
    silent: Silent, backoffs: list[float], http: Http
) -> None:
    stores = stores_at(silent.port, http, None)  # the account's 30 s
    queue = stores.account.queues.get_queue_client("silent")
    took = fails_in_time(queue.send_message, "hello", read_timeout=0.5)
    assert len(silent.requests) == 4 and took < BOUND
