"""A load generator that leaves the CPU to the server it measures.

The benches run the load, the server and Azurite on one small machine. A client of 50 threads
over httpx spends about as much CPU on each POST as the server does to answer it, so it takes
its share of the cores and measures its own GIL queue as part of each answer. This one sends
from one thread over non-blocking keep-alive sockets: a prepared request written, the answer's
status line and `Content-Length` read, the next request sent on the same connection. That is
all it needs, because it only talks to the local host, which always sends `Content-Length`.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

HEADERS_END = b"\r\n\r\n"


@dataclass
class _Connection:
    sock: socket.socket
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    into: bytearray = field(default_factory=bytearray)
    started: float = 0.0


@dataclass(frozen=True)
class _Answer:
    status: int
    size: int  # bytes of the whole answer, headers and body
    keep_alive: bool


def _answer(data: bytearray) -> _Answer | None:
    """The answer's status, size and whether the connection stays open, once its headers are
    in; else None."""
    end = data.find(HEADERS_END)
    if end < 0:
        return None
    head = bytes(data[:end]).decode("latin-1").split("\r\n")
    version, status = head[0].split(" ", 2)[:2]
    fields = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip().lower()
    connection = fields.get("connection", "")
    keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    size = end + len(HEADERS_END) + int(fields.get("content-length", "0"))
    return _Answer(int(status), size, keep_alive)


def post_all(url: str, body: bytes, total: int, concurrency: int) -> dict[str, Any]:
    """POST `body` to `url` `total` times, `concurrency` at once, each connection kept open
    unless the server closes it.

    Returns each answer's latency in seconds (from writing the request to reading the whole
    answer) and status (or "closed" when the server hung up first), the wall time, and the
    CPU seconds this client used for the run.
    """
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    statuses: list[int | str] = []
    selector = selectors.DefaultSelector()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    begun = time.perf_counter()
    sent = 0

    def send_next(conn: _Connection | None) -> None:
        nonlocal sent
        if conn is None:
            sock = socket.create_connection(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Connection(sock)
            selector.register(sock, selectors.EVENT_WRITE, conn)
        else:
            selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        sent += 1
        conn.out, conn.into, conn.started = memoryview(request), bytearray(), time.perf_counter()

    def done(conn: _Connection, status: int | str) -> None:
        latencies.append(time.perf_counter() - conn.started)
        statuses.append(status)

    def close(conn: _Connection) -> None:
        selector.unregister(conn.sock)
        conn.sock.close()

    for _ in range(min(concurrency, total)):
        send_next(None)
    while len(statuses) < total:
        ready = selector.select(timeout=30.0)
        if not ready:
            raise TimeoutError(f"no answer for 30 s ({len(statuses)} of {total} in)")
        for key, events in ready:
            conn: _Connection = key.data
            if events & selectors.EVENT_WRITE:
                written = conn.sock.send(conn.out)
                conn.out = conn.out[written:]
                if not conn.out:
                    selector.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            chunk = conn.sock.recv(1 << 16)
            if not chunk:  # the server hung up before answering
                done(conn, "closed")
                close(conn)
                if sent < total:
                    send_next(None)
                continue
            conn.into += chunk
            answer = _answer(conn.into)
            if answer is None or len(conn.into) < answer.size:
                continue
            done(conn, answer.status)
            if not answer.keep_alive or sent >= total:
                close(conn)
                if sent < total:
                    send_next(None)
            else:
                send_next(conn)
    wall = time.perf_counter() - begun
    used = resource.getrusage(resource.RUSAGE_SELF)
    for key in list(selector.get_map().values()):
        close(key.data)
    return {
        "latencies": latencies,
        "statuses": statuses,
        "wall": wall,
        "cpu": (used.ru_utime - cpu.ru_utime) + (used.ru_stime - cpu.ru_stime),
    }
