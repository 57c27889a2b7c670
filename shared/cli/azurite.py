"""Start and stop a private Azurite (in memory, on free ports): for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
# Azurite's published well-known development key, not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_string(blob: int, queue: int, table: int) -> str:
    base = "http://127.0.0.1"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={base}:{blob}/{ACCOUNT};QueueEndpoint={base}:{queue}/{ACCOUNT};"
        f"TableEndpoint={base}:{table}/{ACCOUNT};"
    )


KEEP_ALIVE = (
    "--blobKeepAliveTimeout",
    "600",
    "--queueKeepAliveTimeout",
    "600",
    "--tableKeepAliveTimeout",
    "600",
)


class Azurite:
    def __init__(self, *, own_session: bool = False) -> None:
        self.ports = (free_port(), free_port(), free_port())
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(*self.ports)

    def start(self) -> None:
        binary = REPO / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise RuntimeError("Azurite is not installed: run `make setup` (npm ci)")
        blob, queue, table = self.ports
        self.process = subprocess.Popen(  # noqa: S603 (our own binary and arguments)
            [
                str(binary),
                "--inMemoryPersistence",
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                # Node closes an idle keep-alive connection after 5 s; a request sent on it as
                # it closes dies with "connection reset", and the SDK cannot retry a POST. Azure
                # Storage keeps idle connections for minutes, so the emulator should too.
                *KEEP_ALIVE,
                "--blobHost",
                "127.0.0.1",
                "--queueHost",
                "127.0.0.1",
                "--tableHost",
                "127.0.0.1",
                "--blobPort",
                str(blob),
                "--queuePort",
                str(queue),
                "--tablePort",
                str(table),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ},
            # own_session: not in the caller's process group, so a Ctrl-C stops the caller,
            # which stops Azurite after what still uses it (make demo-imap).
            start_new_session=self.own_session,
        )
        deadline = time.monotonic() + 30
        for port in self.ports:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"Azurite exited: {err[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("Azurite did not start within 30 s") from None
                    time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
