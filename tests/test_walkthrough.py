"""The README's "Add your own mailbox" steps, run exactly as written, so the README cannot drift:
its command lines are read from the README's marked blocks, not copied here."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from shared.cli.azurite import REPO, Azurite, connection_string, free_port
from shared.store.account import StorageSettings
from shared.store.stores import Stores

from .fakes.dovecot import require_dovecot
from .helpers import records, timeline_entries

pytestmark = pytest.mark.azurite


def walkthrough(name: str) -> list[str]:
    """The command lines of the README's block marked `<!-- walkthrough: name`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"<!-- walkthrough: {name} ")
    block = re.search(r"```sh\n(.*?)\n\s*```", text[start:], re.S)
    assert block, f"no sh block after the walkthrough marker {name!r}"
    lines = [line.strip() for line in block[1].splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def shell(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_local_steps_as_written(stores: Stores, azurite: Azurite) -> None:
    env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string}
    lines = walkthrough("local")
    assert len(lines) >= 3 and any(" import " in line for line in lines)
    outputs, errors = {}, {}
    for line in lines:
        done = shell(line, env)
        assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
        outputs[line.split()[1]] = done.stdout
        errors[line.split()[1]] = done.stderr
    # The import says what it did in a summary, not in two log lines per mail.
    assert "8 found, 8 queued, 0 already imported, 0 failed" in outputs["import"]
    assert "processed: " in outputs["import"]
    assert " map: " not in errors["import"] and " file: " not in errors["import"], errors["import"]
    # explain's record numbers (subject, then "human: create CASE-n") are the ones filed.
    explained = dict(
        re.findall(r"^  '(.+)' from .*\n  \w+: create (CASE-\d+)$", outputs["explain"], re.M)
    )
    assert len(explained) == 4
    filed = {r["Title"]: r["DisplayId"] for r in records(stores)}
    assert filed == explained
    for number in explained.values():
        assert number in outputs["records"]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_imap_demo_as_written(tmp_path: Path) -> None:
    require_dovecot()
    (line,) = walkthrough("imap")
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if k != "AzureWebJobsStorage"}
    with log.open("wb") as out:
        demo = subprocess.Popen(
            ["bash", "-c", line],
            cwd=REPO,
            env={**env, "PORT": str(free_port())},  # `make demo-imap PORT=...`
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    dovecot = azurite = None
    try:
        deadline = time.monotonic() + 180
        stores = None
        while time.monotonic() < deadline and demo.poll() is None:
            text = log.read_text(errors="replace")
            dovecot = re.search(r"Dovecot on 127\.0\.0\.1:(\d+)", text)
            azurite = re.search(r"Azurite in memory on 127\.0\.0\.1:(\d+)-(\d+)", text)
            if dovecot and azurite and stores is None:
                blob, table = int(azurite[1]), int(azurite[2])
                account = connection_string(blob, blob + 1, table)
                stores = Stores.connect(StorageSettings(connection_string=account))
            if stores is not None:
                try:
                    if len(timeline_entries(stores, ["Direction"])) == 8:
                        break
                except HttpResponseError:  # the tables not created yet
                    pass
            time.sleep(0.5)
        assert stores is not None and dovecot and azurite, log.read_text()[-3000:]
        # The sample's four conversations; support's replies, read from Sent, are ours.
        numbers = sorted(r["DisplayId"] for r in records(stores))
        assert numbers == [f"CASE-{n}" for n in range(1, 5)], log.read_text()[-3000:]
        directions = Counter(e["Direction"] for e in timeline_entries(stores, ["Direction"]))
        assert directions == {"in": 5, "out": 3}
    finally:
        os.killpg(demo.pid, signal.SIGTERM)  # make, and the demo under it: as Ctrl-C would
        demo.wait(120)
    # Everything it started is gone: Dovecot with the server's mail, Azurite, the local host.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        listening(int(dovecot[1])) or listening(int(azurite[1]))
    ):
        time.sleep(0.5)
    assert not listening(int(dovecot[1])) and not listening(int(azurite[1])), log.read_text()[
        -3000:
    ]
    config = (REPO / ".demo-imap" / "mailfiler.yaml").read_text()
    assert "password_setting: IMAP_SUPPORT_PASSWORD" in config
