"""What an operator reads when the storage is down or the port is taken: the exact words, the
hint, an exit status that says so, and no traceback (issue 21 points 2 and 3)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli.azurite import REPO, Azurite, connection_string, free_port

MAILFILER = [sys.executable, "-m", "shared.cli"]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILFILER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )


def test_status_with_storage_down_says_where_and_how_to_start_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: a stopped emulator
    env = {
        "AzureWebJobsStorage": connection_string(port, port, port),
        "MAILFILER_CONFIG": str(REPO / "samples" / "mailfiler.yaml"),
    }
    result = run("status", "--settings", str(tmp_path / "none.json"), env=env)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"unhealthy: storage unreachable at http://127.0.0.1:{port}/devstoreaccount1",
        "  start the local storage with `make run` (or check AzureWebJobsStorage)",
    ]
    # The log says it once, in one line; a traceback is for bugs only.
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "storage unreachable at" in result.stderr

    # Any other command: the same words, no traceback, a non-zero exit.
    listed = run("records", "list", "--settings", str(tmp_path / "none.json"), env=env)
    assert listed.returncode == 2
    assert "Traceback" not in listed.stderr
    assert listed.stderr.splitlines()[-2:] == [
        f"mailfiler: storage unreachable at http://127.0.0.1:{port}/devstoreaccount1",
        "  start the local storage with `make run` (or check AzureWebJobsStorage)",
    ]


@pytest.mark.azurite
def test_a_port_in_use_is_one_line(azurite: Azurite, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "AzureWebJobsStorage": azurite.connection_string,
            "MAILFILER_CONFIG": str(REPO / "samples" / "mailfiler.yaml"),
        }
        result = run("run", "--port", str(port), "--settings", str(tmp_path / "none.json"), env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mailfiler: port {port} on 127.0.0.1 is already in use (another `mailfiler run`?): "
        f"stop it, or choose another port: --port {port + 1} (make run PORT={port + 1})"
    )
    assert "Traceback" not in result.stderr
