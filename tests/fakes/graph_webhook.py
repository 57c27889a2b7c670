"""A minimal webhook endpoint for tests of the fake Graph (and a reference of a correct one).

It answers Graph's validation request as "notificationUrl validation" requires (200,
``text/plain``, the URL-decoded token) unless told to misbehave, and records every notification
POST. Answers can be scripted per call: ``receiver.script = [500, 202]``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from tests.fakes.harness import HttpServer, OneServer, Reply, RequestLog, ServerTls
from tests.fakes.tls import TlsFiles

Validation = Literal["echo", "wrong-body", "json", "not-found", "slow", "encoded"]


@dataclass(frozen=True)
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class WebhookReceiver(OneServer[HttpServer]):
    def __init__(
        self,
        *,
        status: int = 202,
        delay: float = 0.0,
        validation: Validation = "echo",
        tls: TlsFiles | None = None,
    ) -> None:
        self.status = status
        self.delay = delay
        self.validation: Validation = validation
        self.script: list[int] = []
        self._lock = threading.Lock()
        self._received = RequestLog[Received]()
        self._tokens = RequestLog[str]()
        self._tls = ServerTls.of(tls) if tls else None

    def make_server(self) -> HttpServer:
        return HttpServer(self._serve, self._tls)

    @property
    def base_url(self) -> str:
        return self.running.base_url

    def url(self, path: str = "/notify") -> str:
        return self.base_url + path

    @property
    def received(self) -> list[Received]:
        return self._received.all()

    @property
    def notifications(self) -> list[Any]:
        return [
            n for r in self.received if isinstance(r.body, dict) for n in r.body.get("value", [])
        ]

    @property
    def validation_tokens(self) -> list[str]:
        return self._tokens.all()

    def _serve(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        path, _, raw_query = target.partition("?")
        query = {k: v[0] for k, v in urllib.parse.parse_qs(raw_query).items()}
        if "validationToken" in query:
            token = query["validationToken"]
            self._tokens.add(token)
            mode = self.validation
            if mode == "slow":
                time.sleep(self.delay)
            if mode == "not-found":
                return Reply(404, b"", {"Content-Type": "text/plain"})
            if mode == "json":
                return Reply(200, json.dumps(token).encode(), {"Content-Type": "application/json"})
            if mode == "wrong-body":
                return Reply(200, b"ok", {"Content-Type": "text/plain"})
            if mode == "encoded":
                quoted = urllib.parse.quote(token).encode()
                return Reply(200, quoted, {"Content-Type": "text/plain"})
            return Reply(200, token.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body
        with self._lock:  # a scripted answer belongs to the notification received with it
            self._received.add(Received(path, query, headers, parsed))
            status = self.script.pop(0) if self.script else self.status
        if self.delay and self.validation != "slow":
            time.sleep(self.delay)
        return Reply(status, b"", {"Content-Type": "text/plain"})
