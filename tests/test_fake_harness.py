"""The server harness every fake runs on (tests/fakes/harness.py), over real sockets on loopback:
HTTPS with the shared certificate, answers and request logs, a fake's own bug answered 500,
start/stop, a TCP proxy's live connections closed at stop, fault rules that fire a set number
of times, and a CA of a test's own for other names."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import httpx
import pytest

from tests.fakes.harness import (
    FaultPlan,
    HttpServer,
    OneServer,
    Reply,
    RequestLog,
    ServerTls,
    TcpServer,
    json_reply,
)
from tests.fakes.tls import Authority, shared_tls

GREETING = "Привет, 世界: مرحبا"


class Echo(OneServer[HttpServer]):
    """A fake of one route: answers JSON naming what it got; ``/boom`` is a bug in the fake."""

    def __init__(self, tls: ServerTls | None = None) -> None:
        self.tls = tls
        self.log = RequestLog[tuple[str, str, bytes]]()

    def make_server(self) -> HttpServer:
        return HttpServer(self._serve, self.tls)

    def _serve(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        self.log.add((method, target, body))
        if target == "/boom":
            raise ValueError("a bug in the fake")
        payload = {"method": method, "body": body.decode(), "header": headers.get("x-name")}
        return json_reply(201, payload, {"X-Fake": "echo"})


def test_https_with_the_shared_certificate_answers_and_logs_non_latin_bodies() -> None:
    tls = ServerTls.of()
    assert tls.ca_file == shared_tls().ca_file  # one certificate per test process
    with Echo(tls) as fake, httpx.Client(verify=tls.client_context()) as client:
        assert fake.running.base_url == f"https://127.0.0.1:{fake.port}"
        response = client.post(
            f"{fake.running.base_url}/echo?q=1",
            content=GREETING.encode(),
            headers={"X-Name": "ann"},
        )
        assert response.status_code == 201
        assert response.headers["x-fake"] == "echo"
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert response.json() == {"method": "POST", "body": GREETING, "header": "ann"}
        assert fake.log.all() == [("POST", "/echo?q=1", GREETING.encode())]
        assert len(fake.log) == 1
        assert fake.running.errors == []


def test_a_client_without_the_ca_is_refused() -> None:
    with Echo(ServerTls.of()) as fake, httpx.Client() as client:
        with pytest.raises(httpx.ConnectError):
            client.get(f"{fake.running.base_url}/echo")
        assert fake.log.all() == []  # the handshake failed: no request reached the fake


def test_a_bug_in_the_fake_answers_500_and_is_kept() -> None:
    with Echo() as fake, httpx.Client() as client:
        response = client.get(f"{fake.running.base_url}/boom")
        assert response.status_code == 500
        assert "a bug in the fake" in response.text
        (error,) = fake.running.errors
        assert isinstance(error, ValueError)


def test_start_is_idempotent_and_stop_frees_the_fake_for_a_new_port() -> None:
    fake = Echo()
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.port
    fake.start()
    first = fake.port
    assert fake.start().port == first
    fake.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.running
    with fake:
        assert httpx.get(f"{fake.running.base_url}/x").status_code == 201
    fake.stop()  # a second stop is harmless


def test_a_tcp_server_closes_the_connections_it_holds_when_it_stops() -> None:
    arrived = threading.Event()

    def serve(conn: socket.socket) -> None:
        server.hold(conn)
        arrived.set()
        try:
            while conn.recv(1024):  # until stop() closes it
                pass
        except OSError:
            pass
        finally:
            server.release(conn)

    server = TcpServer(serve)
    server.start()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        assert arrived.wait(5)
        server.stop()
        assert client.recv(1024) == b""  # closed by the server, not left hanging
    finally:
        client.close()


def test_an_http_server_never_started_stops_at_once() -> None:
    server = HttpServer(lambda *_: Reply(204))
    server.stop()  # shutdown() would wait for ever on a loop that never ran
    with pytest.raises(OSError):
        server.socket.getsockname()


def test_fault_rules_fire_their_number_of_times_first_match_first() -> None:
    plan = FaultPlan[str]()
    plan.add("move-twice", 2)
    plan.add("move-once")
    plan.add("sync")
    moves = [plan.take(lambda r: r.startswith("move")) for _ in range(4)]
    assert moves == ["move-twice", "move-twice", "move-once", None]
    assert plan.take(lambda r: r == "sync") == "sync"
    assert plan.take(lambda r: r == "sync") is None
    plan.add("late")
    plan.clear()
    assert plan.take(lambda r: True) is None


def test_an_authority_of_a_test_s_own_issues_certificates_for_other_names(tmp_path: Path) -> None:
    authority = Authority(tmp_path, "Δοκιμή CA")
    cert_file, key_file = authority.issue("127.0.0.2", "mail.example.test")
    assert Path(key_file).stat().st_mode & 0o077 == 0
    trusting = ssl.create_default_context(cafile=authority.ca_file)
    assert _handshake(trusting, cert_file, key_file) == b"hello"
    # The shared CA does not vouch for it: a certificate is trusted through its own CA only.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ssl.create_default_context(cafile=shared_tls().ca_file), cert_file, key_file)


def _handshake(client: ssl.SSLContext, cert_file: str, key_file: str) -> bytes:
    """What a TLS server on 127.0.0.2 with this certificate sends the client after the
    handshake, which checks the certificate for 127.0.0.2."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.2", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.sendall(b"hello")
        except (ssl.SSLError, OSError):
            conn.close()  # the client refused the certificate

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.2", port), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.2") as conn,
        ):
            return conn.recv(1024)
    finally:
        thread.join(5)
        listener.close()
