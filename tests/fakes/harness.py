"""The one server harness every fake runs on, so none repeats it.

* :class:`HttpServer`: a real HTTP(S) server on 127.0.0.1, a free port, a thread per connection
  (TLS handshakes done in that thread, so a slow client never blocks accept), HTTP/1.1
  keep-alive. A fake is an :data:`App`: ``(method, target, headers, body) -> Reply``.
* :class:`TcpServer`: the same for raw TCP (the IMAP proxies): ``serve(socket)`` per connection.
* :class:`ServerTls`: the process's one CA and server certificate (:func:`tests.fakes.tls.
  shared_tls`, made once) as a server context, a CA file and a CA bundle for clients.
* :class:`Serving`: ``with fake:`` for anything with ``start()`` and ``stop()``;
  :class:`OneServer`: a fake that is one such server, made by ``start()``, gone after ``stop()``.
* :class:`RequestLog`: what a fake saw, thread-safe; :class:`FaultPlan`: rules that each fire a
  set number of times (the first that matches), for fault hooks.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from tests.fakes.tls import TlsFiles, ca_bundle, server_context, shared_tls

HOST = "127.0.0.1"
T = TypeVar("T")
S = TypeVar("S", bound="_LoopbackServer")


# --- answers --------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer of a fake (Content-Length is added when it is sent)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


App = Callable[[str, str, dict[str, str], bytes], Reply]


def json_reply(
    status: int,
    payload: Any,
    headers: dict[str, str] | None = None,
    *,
    content_type: str = "application/json; charset=utf-8",
) -> Reply:
    """``payload`` as a JSON answer (UTF-8, non-ASCII escaped as json.dumps does)."""
    return Reply(
        status, json.dumps(payload).encode(), {"Content-Type": content_type, **(headers or {})}
    )


# --- lifecycle ------------------------------------------------------------------------------------


class Serving:
    """``with fake:`` starts it and stops it (through :meth:`close`, which a fake that owns more
    than a server, a temporary directory say, extends)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _LoopbackServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded server on 127.0.0.1 and a free port (bound at once), served from a daemon
    thread between start() and stop()."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() would wait for a loop that never started
            self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None


class OneServer(Serving, Generic[S]):
    """A fake that is one server: :meth:`make_server` builds it when the fake starts (on a new
    free port each time), :meth:`stop` stops it; starting a running fake changes nothing."""

    server: S | None = None

    def make_server(self) -> S:
        raise NotImplementedError

    def start(self) -> Self:
        if self.server is None:
            self.server = self.make_server()
            self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def running(self) -> S:
        """The server; RuntimeError before start() and after stop()."""
        if self.server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self.server

    @property
    def port(self) -> int:
        return self.running.port


# --- TLS ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTls:
    """A fake's TLS: the server context and what its clients need to trust it."""

    files: TlsFiles
    context: ssl.SSLContext
    ca_bundle: str  # the public CAs plus the fake CA (see tests.fakes.tls.ca_bundle)

    @classmethod
    def of(cls, files: TlsFiles | None = None) -> ServerTls:
        """TLS with ``files``, or with the process's shared certificate (made once)."""
        files = files or shared_tls()
        return cls(files, server_context(files), ca_bundle(files))

    @property
    def ca_file(self) -> str:
        return self.files.ca_file

    def env(self) -> dict[str, str]:
        """Environment that makes requests (msal, exchangelib), httpx and ssl trust the fake and
        the public CAs. requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override ``verify=`` on
        a Session (psf/requests#3829), so code that builds its own clients needs these."""
        return {
            "SSL_CERT_FILE": self.ca_bundle,
            "REQUESTS_CA_BUNDLE": self.ca_bundle,
            "CURL_CA_BUNDLE": self.ca_bundle,
        }

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting the fake (httpx 0.28 prefers it to ``verify=<path>``)."""
        return ssl.create_default_context(cafile=self.ca_file)


# --- HTTP -----------------------------------------------------------------------------------------


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    wbufsize = 1 << 16  # headers and body leave in one write (no Nagle/delayed-ACK stall)
    disable_nagle_algorithm = True
    server: HttpServer

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        body = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.server.app(self.command, self.path, headers, body)
        except Exception as exc:  # a bug in the fake: answer 500 so the test sees it
            reply = Reply(500, repr(exc).encode(), {"Content-Type": "text/plain"})
            self.server.errors.append(exc)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HttpServer(_LoopbackServer, HTTPServer):
    """``app`` over HTTP, or HTTPS with ``tls``, at :attr:`base_url` (bound at once, served from
    :meth:`start`). Exceptions ``app`` raises answer 500 and are kept in :attr:`errors`."""

    def __init__(self, app: App, tls: ServerTls | None = None) -> None:
        super().__init__((HOST, 0), _HttpHandler)
        self.app = app
        self.errors: list[Exception] = []
        self.tls = tls
        if tls is not None:
            self.socket = tls.context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(10)
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # client hang-ups and TLS errors are part of the game


# --- TCP ------------------------------------------------------------------------------------------


class _TcpHandler(socketserver.BaseRequestHandler):
    server: TcpServer
    request: socket.socket

    def handle(self) -> None:
        self.server.serve(self.request)


class TcpServer(_LoopbackServer):
    """``serve(connection)`` for every connection to 127.0.0.1:PORT, each in its own thread.
    Sockets handed to :meth:`hold` are closed by :meth:`stop` (a proxy's live connections)."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        super().__init__((HOST, 0), _TcpHandler)
        self.serve = serve
        self._held: set[socket.socket] = set()
        self._lock = threading.Lock()

    def hold(self, *socks: socket.socket) -> None:
        with self._lock:
            self._held.update(socks)

    def release(self, *socks: socket.socket) -> None:
        with self._lock:
            self._held.difference_update(socks)

    def stop(self) -> None:
        super().stop()
        with self._lock:
            live, self._held = list(self._held), set()
        for sock in live:
            close_socket(sock)


def close_socket(sock: socket.socket) -> None:
    """Shut both directions and close; a socket the peer already closed is no error."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- records and fault hooks ----------------------------------------------------------------------


class RequestLog(Generic[T]):
    """What a fake saw, in order; safe to add to from the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[T] = []

    def add(self, *items: T) -> None:
        with self._lock:
            self._items.extend(items)

    def extend(self, items: Iterable[T]) -> None:
        self.add(*items)

    def all(self) -> list[T]:
        """A copy, so a test reads it while the fake goes on adding."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class FaultPlan(Generic[T]):
    """Rules armed to fire a number of times each: :meth:`take` consumes one firing of the first
    rule that matches (in the order added) and returns it; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[list[Any]] = []  # [rule, firings left]

    def add(self, rule: T, times: int = 1) -> T:
        with self._lock:
            self._armed.append([rule, times])
        return rule

    def take(self, matches: Callable[[T], bool]) -> T | None:
        with self._lock:
            for armed in self._armed:
                rule: T = armed[0]
                if armed[1] > 0 and matches(rule):
                    armed[1] -= 1
                    return rule
        return None

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
