"""The emulator the tests (and `make run`) start behaves like Azure Storage where it matters."""

import socket
import time

import pytest

from shared.cli.azurite import Azurite

pytestmark = pytest.mark.azurite


def test_idle_connections_stay_open_past_nodes_five_seconds(azurite: Azurite) -> None:
    # Node's default closes an idle keep-alive connection after 5 s. A request written as it
    # closes dies with "connection reset by peer", which the SDK does not retry for a POST
    # (an insert): one failed a CI run. Azure keeps idle connections for minutes.
    connections = []
    for port in azurite.ports:
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"GET /devstoreaccount1?comp=list HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 ")
        connections.append(conn)
    time.sleep(6)
    for port, conn in zip(azurite.ports, connections, strict=True):
        conn.setblocking(False)
        try:
            closed = conn.recv(1) == b""
        except BlockingIOError:
            closed = False
        conn.close()
        assert not closed, f"the emulator closed an idle connection on port {port}"
