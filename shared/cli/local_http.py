"""The local host's HTTP side: the app's HTTP functions at `http://HOST:PORT/<prefix>/<route>`.

Built like the real thing. In Azure the Functions host (not Python) owns the sockets and hands
each whole request to the Python worker, which runs sync functions on a thread pool in arrival
order and awaits async functions on its event loop. Here one asyncio thread owns every socket
(HTTP/1.1 parsed by h11, keep-alive), sync functions run on a pool of
`PYTHON_THREADPOOL_THREAD_COUNT` threads and async ones on that asyncio thread. A thread per
connection instead makes every caller race for the GIL on each read and write, and the race is
unfair: under 50 concurrent webhook POSTs some answers waited half a second behind later ones.

Unlike the real thing it checks no keys, so it answers only its own callers: a request whose
`Host` is not this server (127.0.0.1, localhost or [::1] with its port: DNS rebinding) gets 421,
and one a browser sends from another site (`Origin`, `Sec-Fetch-Site`: CSRF) gets 403, on every
path, `/admin/functions/*` included. It never sends CORS headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import json
import logging
import os
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
import h11

from ..console.access import PEER_HEADER
from ..core.errors import MailfilerError

if TYPE_CHECKING:
    from .host import LocalHost, Registered

log = logging.getLogger("mailfiler.host")
READ_CHUNK = 1 << 16
IDLE_TIMEOUT = 300.0  # seconds an idle keep-alive connection is kept
MAX_REQUEST = 100 * 1024 * 1024  # the Functions host's limit on an HTTP request's body
NO_BODY = (204, 304)  # answers that carry neither a body nor Content-Length
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SAME_ORIGIN_FETCH = ("same-origin", "none")  # Sec-Fetch-Site values of our own pages or a user


class _TooLarge(MailfilerError):
    """The request's body is over MAX_REQUEST."""


def route_regex(route: str) -> re.Pattern[str]:
    """A Functions route template (`records/{type}/{id}`) as a regex of named groups."""
    pattern = ""
    for part in re.split(r"(\{[^}]+\})", route.strip("/")):
        if part.startswith("{*"):  # a catch-all: the rest of the path, slashes and all
            pattern += f"(?P<{part[2:-1]}>.*)"
        elif part.startswith("{"):
            name = part[1:-1].split(":", 1)[0].rstrip("?")
            pattern += f"(?P<{name}>[^/]+)"
        else:
            pattern += re.escape(part)
    return re.compile(f"^{pattern}$")


def invocation_threads() -> int | None:
    """The Python worker's pool for sync functions: PYTHON_THREADPOOL_THREAD_COUNT, else (3.9
    and later) ThreadPoolExecutor's default, min(32, CPUs + 4)."""
    value = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    if value.isdigit() and int(value) >= 1:
        return int(value)
    if value:
        log.warning("PYTHON_THREADPOOL_THREAD_COUNT=%r is not a positive integer; ignored", value)
    return None


Answer = tuple[int, dict[str, str], bytes]


def _text(status: int, text: str) -> Answer:
    return status, {"Content-Type": "text/plain"}, text.encode()


def _error(status: int, code: str, message: str) -> Answer:
    """The API's error body, for the host's own refusals."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json"}, body


def host_names(bound: str) -> tuple[str, ...]:
    """The names a caller of a server bound to `bound` may put in Host: the loopback names, and
    the bound address itself when it is one (not a wildcard such as 0.0.0.0)."""
    try:
        address = ipaddress.ip_address(bound)
    except ValueError:
        return (*LOOPBACK_NAMES, bound.lower())  # a name the user chose to bind to
    if address.is_unspecified or address.is_loopback:
        return LOOPBACK_NAMES
    return (*LOOPBACK_NAMES, f"[{address}]" if address.version == 6 else str(address))


class LocalHttpServer:
    """Serves the host's HTTP functions; the socketserver-style surface the CLI and tests use:
    `server_address`, `serve_forever()` (blocks), `shutdown()` (from another thread: stops
    and waits), `server_close()`. The socket listens from construction on."""

    def __init__(self, address: tuple[str, int], host: LocalHost, route_prefix: str) -> None:
        self.host = host
        self.route_prefix = route_prefix
        # As the Functions host orders them: a catch-all route (`{*path}`) only when no other
        # route has the path (ASP.NET route precedence).
        self.routes: list[tuple[Registered, re.Pattern[str]]] = sorted(
            (
                (fn, route_regex(fn.trigger.get("route") or fn.name))
                for fn in host.functions
                if fn.trigger["type"] == "httpTrigger"
            ),
            key=lambda pair: _catch_all(pair[0]),
        )
        self.invocations = ThreadPoolExecutor(invocation_threads(), thread_name_prefix="invoke")
        self.socket = socket.create_server(address, backlog=128)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        port = self.server_address[1]
        names = host_names(address[0])
        self.hosts = frozenset(f"{name}:{port}" for name in names) | (
            frozenset(names) if port == 80 else frozenset()
        )
        self.origins = frozenset(f"http://{host}" for host in self.hosts)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = threading.Event()

    # Lifecycle

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        if self._stopped.is_set() or not self._started.wait(10):
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        self._stopped.wait(10)

    def server_close(self) -> None:
        self.socket.close()
        self.invocations.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self.socket, limit=READ_CHUNK)
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()  # stops accepting; the socket stays ours until server_close

    # Connections

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:  # the answer leaves in one write; do not let Nagle hold it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h11.Connection(h11.SERVER)
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        try:
            while True:
                request = await self._request(conn, reader, writer)
                if request is None:
                    return
                head, body = request
                status, headers, payload = await self._answer(head, body, peer)
                self._send(conn, writer, head.method, status, headers, payload)
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, _TooLarge) as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = 413 if isinstance(exc, _TooLarge) else exc.error_status_hint
                answer = _text(status, f"bad request: {exc}")
                with contextlib.suppress(ConnectionError, h11.LocalProtocolError):
                    self._send(conn, writer, b"GET", *answer)
                    await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.CancelledError):
            pass  # the caller went away, idled out, or the server is stopping
        except Exception:  # a bug here must not pass silently, nor take the server down
            log.exception("http: connection failed")
        finally:
            writer.close()

    async def _request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request, bytes] | None:
        """The next request and its body; None when the caller closed the connection."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    go_on = h11.InformationalResponse(status_code=100, headers=[])
                    writer.write(conn.send(go_on) or b"")
                async with asyncio.timeout(IDLE_TIMEOUT):  # no task per read, as wait_for makes
                    data = await reader.read(READ_CHUNK)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
                length = dict(event.headers).get(b"content-length", b"0")
                if int(length) > MAX_REQUEST:  # h11 has checked it is a number
                    raise _TooLarge(f"body over {MAX_REQUEST} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST:  # chunked: no length up front
                    raise _TooLarge(f"body over {MAX_REQUEST} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head, bytes(body)
            else:  # ConnectionClosed, or PAUSED after a message we already answered
                return None

    def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        method: bytes,
        status: int,
        headers: dict[str, str],
        payload: bytes,
    ) -> None:
        fields = [(k, v) for k, v in headers.items() if k.lower() != "content-length"]
        if status in NO_BODY:
            payload = b""  # HTTP forbids one; a function's stray body is dropped
        else:
            fields.append(("Content-Length", str(len(payload))))
        try:  # the reason phrase in the status line, as the Functions host sends it
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        out = conn.send(h11.Response(status_code=status, headers=fields, reason=reason)) or b""
        if payload and method != b"HEAD":
            out += conn.send(h11.Data(data=payload)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        writer.write(out)

    # Dispatch

    def refusal(self, headers: dict[str, str]) -> Answer | None:
        """421 for a Host that is not us, 403 for a browser's cross-site request; else None."""
        host = headers.get("host")
        # HTTP/1.1 requires Host (h11 refuses a request without); a browser always sends one.
        if host is not None and host.strip().lower() not in self.hosts:
            return _error(
                421, "misdirected", "this host answers only as 127.0.0.1, localhost or [::1]"
            )
        origin = headers.get("origin")
        if origin is not None and origin.strip().lower() not in self.origins:
            return _error(403, "cross_origin", "requests from other origins are refused")
        site = headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in SAME_ORIGIN_FETCH:
            return _error(403, "cross_origin", "requests from other sites are refused")
        return None

    async def _answer(self, head: h11.Request, body: bytes, peer: str = "") -> Answer:
        method, target = head.method.decode("ascii"), head.target.decode("latin-1")
        split = urlsplit(target)
        headers: dict[str, str] = {}
        for name, value in head.headers:  # h11 gives names lowercased
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        # Who is connected, for the console (shared/console/access.py); a caller's own copy of
        # the header is replaced, never trusted.
        headers[PEER_HEADER] = peer
        refused = self.refusal(headers)
        if refused is not None:
            log.warning(
                "http: %s %s refused (%d): Host %r, Origin %r",
                method,
                split.path[:200],
                refused[0],
                headers.get("host", "")[:100],
                headers.get("origin", "")[:100],
            )
            return refused
        if split.path.startswith("/admin/functions/") and method == "POST":
            status, text = self.host.admin_invoke(split.path.rsplit("/", 1)[-1])
            return _text(status, text)
        prefix = f"/{self.route_prefix}/" if self.route_prefix else "/"
        if not split.path.startswith(prefix):
            return _error(404, "not_found", f"no route {split.path[:200]!r}")
        rel = split.path[len(prefix) :]
        allowed: set[str] = set()  # methods of the routes that have this path
        for fn, regex in self.routes:
            match = regex.match(rel)
            methods = [m.upper() for m in fn.trigger.get("methods") or []]
            if match and allowed and _catch_all(fn):
                break  # the path is a route's, only not for this method: 405 below
            if not match or (methods and method not in methods):
                if match:
                    allowed.update(methods)
                continue
            request = func.HttpRequest(
                method,
                f"http://{headers.get('host', 'localhost')}{target}",
                headers=headers,
                params=dict(parse_qsl(split.query, keep_blank_values=True)),
                # The Functions host hands route parameters over decoded.
                route_params={k: unquote(v) for k, v in match.groupdict().items() if v is not None},
                body=body,
            )
            loop = asyncio.get_running_loop()
            try:
                if inspect.iscoroutinefunction(fn.call):
                    # The worker awaits async functions on its event loop, not on its pool.
                    response = await fn.call(request)
                else:
                    response = await loop.run_in_executor(self.invocations, fn.call, request)
            except Exception:
                log.exception("http: function %s raised", fn.name)
                return _text(500, "internal error")
            out = dict(response.headers.items())
            if not any(key.lower() == "content-type" for key in out):
                out["Content-Type"] = response.mimetype or "text/plain"
            return response.status_code, out, response.get_body()
        if allowed:
            status, headers, payload = _error(
                405,
                "method_not_allowed",
                f"{method} is not allowed here: {', '.join(sorted(allowed))}",
            )
            return status, {**headers, "Allow": ", ".join(sorted(allowed))}, payload
        return _error(404, "not_found", f"no route {split.path[:200]!r}")


def _catch_all(fn: Registered) -> bool:
    return "{*" in (fn.trigger.get("route") or "")
