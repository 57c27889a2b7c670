"""The local host's HTTP functions on real loopback HTTP, as `func start` serves them: one way
for every test that calls the API (or functions of its own) over the wire."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from shared.cli.azurite import free_port
from shared.cli.host import LocalHost
from shared.cli.local_http import LocalHttpServer


@dataclass(frozen=True)
class Served:
    port: int

    @property
    def base(self) -> str:
        """The API's base URL (routes go after it: `{base}/records/...`)."""
        return f"http://127.0.0.1:{self.port}/api"


@contextmanager
def serve_api(host: LocalHost) -> Iterator[Served]:
    """Serve `host`'s HTTP functions under /api on a free port of 127.0.0.1 until the block
    ends; then stop, close the socket and wait for the serving thread."""
    server = LocalHttpServer(("127.0.0.1", free_port()), host, route_prefix="api")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive(), "the HTTP server's thread did not stop"
