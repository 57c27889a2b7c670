"""A TCP proxy on 127.0.0.1 that loses connections on purpose, in front of a real server (Dovecot)
or a fake one (the fake EWS), to test what a client does when the network fails mid-request.

Bytes pass through unchanged until a rule matches a chunk the client sent (a plain substring:
an IMAP command such as ``b" MOVE "``, a SOAP operation such as ``b"<m:MoveItem"``):

* ``cut(pattern, deliver=False)``: the request is lost; the connection closes before the server
  sees it.
* ``cut(pattern, deliver=True)``: the server gets the request and carries it out, but its answer
  is lost: the connection closes when the answer starts (the half-done case a retry must
  survive).
* ``answer(pattern, reply)``: the server never sees the request; the client gets
  ``reply(request)`` instead (an IMAP ``NO [UNAVAILABLE]``, a throttling message).
* ``before(pattern, action)``: ``action()`` runs, then the request goes on (another client
  acting at that very moment: creating the folder our CREATE names).

Each rule fires ``times`` times (connections are matched in the order requests arrive).
:attr:`matched` keeps every request a rule fired on. A chunk is what one ``recv`` returns: on
loopback, a client's single command or HTTP body arrives in one piece.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.harness import FaultPlan, OneServer, TcpServer, close_socket


@dataclass(frozen=True)
class _Rule:
    pattern: bytes
    kind: str  # "drop" | "lose-answer" | "answer" | "before"
    reply: Callable[[bytes], bytes] | None = None
    action: Callable[[], None] | None = None


class CuttingProxy(OneServer[TcpServer]):
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._rules = FaultPlan[_Rule]()
        self._lock = threading.Lock()
        self.matched: list[bytes] = []
        self.connections = 0
        self.opened: list[float] = []  # when each connection came in (time.time())

    # --- rules ---------------------------------------------------------------------------------

    def cut(self, pattern: bytes, *, deliver: bool, times: int = 1) -> None:
        self._rules.add(_Rule(pattern, "lose-answer" if deliver else "drop"), times)

    def answer(self, pattern: bytes, reply: Callable[[bytes], bytes], times: int = 1) -> None:
        self._rules.add(_Rule(pattern, "answer", reply), times)

    def before(self, pattern: bytes, action: Callable[[], None], times: int = 1) -> None:
        self._rules.add(_Rule(pattern, "before", action=action), times)

    def _match(self, chunk: bytes) -> _Rule | None:
        rule = self._rules.take(lambda r: r.pattern in chunk)
        if rule is not None:
            with self._lock:
                self.matched.append(chunk)
        return rule

    def make_server(self) -> TcpServer:
        return TcpServer(self._serve)

    # --- one connection ------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self.opened.append(time.time())
        try:
            upstream = socket.create_connection(self.upstream, timeout=30)
        except OSError:
            close_socket(client)
            return
        lose_answer = threading.Event()
        done = threading.Event()

        def shut() -> None:
            done.set()
            close_socket(client)
            close_socket(upstream)

        def responses() -> None:
            try:
                while not done.is_set():
                    data = upstream.recv(65536)
                    if not data or lose_answer.is_set():
                        break
                    client.sendall(data)
            except OSError:
                pass
            shut()

        reader = threading.Thread(target=responses, daemon=True)
        reader.start()
        try:
            while not done.is_set():
                chunk = client.recv(65536)
                if not chunk:
                    break
                rule = self._match(chunk)
                if rule is None:
                    upstream.sendall(chunk)
                elif rule.kind == "drop":
                    break
                elif rule.kind == "lose-answer":
                    lose_answer.set()
                    upstream.sendall(chunk)
                elif rule.kind == "before":
                    assert rule.action is not None
                    rule.action()
                    upstream.sendall(chunk)
                else:
                    assert rule.reply is not None
                    client.sendall(rule.reply(chunk))
        except OSError:
            pass
        if not lose_answer.is_set():
            shut()
        reader.join(timeout=30)  # with a lost answer: closes when the answer starts
        shut()


def imap_reply(text: str) -> Callable[[bytes], bytes]:
    """An IMAP tagged answer to the command in a chunk: ``<tag> <text>``."""

    def reply(chunk: bytes) -> bytes:
        tag = chunk.split(b" ", 1)[0]
        return tag + b" " + text.encode() + b"\r\n"

    return reply
