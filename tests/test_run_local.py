"""`make run` (scripts/run-local.sh): ports settable, honest about the storage it uses, says
when Azurite could not start, names the configuration in use (issue 21 point 4)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.cli.azurite import REPO, Azurite, free_port

SCRIPT = REPO / "scripts" / "run-local.sh"
SAMPLE = REPO / "samples" / "mailfiler.yaml"


def clean_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The caller's environment without storage or Mailfiler settings of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AzureWebJobsStorage", "MAILFILER_", "PORT"))
        and k not in ("BLOB_PORT", "QUEUE_PORT", "TABLE_PORT", "AZURITE_PORTS")
    }
    return {**env, "AZURITE_LOG": str(tmp_path / "azurite.log"), **values}


@contextmanager
def listening() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_azurite_failing_to_start_is_said_with_its_log(tmp_path: Path) -> None:
    queue, table = free_port(), free_port()
    with listening() as blob:  # Azurite cannot have its blob port
        result = subprocess.run(
            [str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(
                tmp_path, BLOB_PORT=str(blob), QUEUE_PORT=str(queue), TABLE_PORT=str(table)
            ),
        )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"run-local: Azurite failed to start on 127.0.0.1 (blob {blob}, queue {queue}, "
        f"table {table}); its log ({tmp_path / 'azurite.log'}):"
    )
    assert "EADDRINUSE" in result.stderr
    assert lines[-1] == "  a port in use? choose others: make run AZURITE_PORTS=20000"
    assert "mailfiler: configuration" not in result.stdout  # the host was not started


@pytest.mark.azurite
def test_a_storage_already_running_is_reused_and_said_so(azurite: Azurite, tmp_path: Path) -> None:
    blob, queue, table = azurite.ports
    with listening() as port:  # and the host's port is taken: it stops at once, in one line
        result = subprocess.run(
            [str(SCRIPT)],
            capture_output=True,
            text=True,
            timeout=120,
            env=clean_env(
                tmp_path,
                PORT=str(port),
                BLOB_PORT=str(blob),
                QUEUE_PORT=str(queue),
                TABLE_PORT=str(table),
                MAILFILER_CONFIG=str(SAMPLE),
            ),
        )
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert out[:4] == [
        f"storage: reusing the one already running on 127.0.0.1 (blob {blob}, queue {queue}, "
        f"table {table}): what it holds from",
        "  earlier runs stays, and stays after Ctrl-C (stop that process, or choose other ports "
        "with",
        "  AZURITE_PORTS=..., for a fresh one)",
        f"mailfiler: configuration {SAMPLE}",
    ]
    assert "forgets everything" not in result.stdout
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"mailfiler: port {port} on 127.0.0.1 is already in use")
    )
    assert "Traceback" not in result.stderr
    assert answers(queue)  # the storage it found is left running


def test_custom_ports_serve_and_stop_with_ctrl_c(tmp_path: Path) -> None:
    port, blob = free_port(), free_port()
    queue, table = free_port(), free_port()
    process = subprocess.Popen(
        [str(SCRIPT), "--config", str(SAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C reaches the whole group, as in a terminal
        env=clean_env(
            tmp_path,
            PORT=str(port),
            BLOB_PORT=str(blob),
            QUEUE_PORT=str(queue),
            TABLE_PORT=str(table),
        ),
    )
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/health"
                with urllib.request.urlopen(url, timeout=5) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200
        assert answers(table)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    lines = out.splitlines()
    assert lines[0].startswith(
        f"storage: Azurite in memory on 127.0.0.1 (blob {blob}, queue {queue}, table {table}), pid "
    )
    assert lines[0].endswith("; it stops with")
    assert lines[1:4] == [
        "  Ctrl-C and, being in memory, forgets everything",
        f"mailfiler: configuration {SAMPLE}",
        f"  health:    curl -s http://127.0.0.1:{port}/api/health",
    ]
    assert "mailfiler: stopping" in out
    deadline = time.monotonic() + 10
    while answers(table) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not answers(table)  # Azurite stopped with it
