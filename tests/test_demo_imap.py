"""`make demo-imap` as a user runs it: a throwaway Dovecot with the sample mail, filed over IMAP."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from shared.cli.azurite import REPO, connection_string, free_port
from shared.store.account import StorageSettings
from shared.store.stores import Stores

from .fakes.dovecot import require_dovecot
from .helpers import records, timeline_entries

pytestmark = pytest.mark.azurite


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_demo_imap_files_the_sample_over_imap_and_cleans_up(tmp_path: Path) -> None:
    require_dovecot()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "demo_imap.py"), "--port", str(free_port())],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 120
        stores = None
        while time.monotonic() < deadline and demo.poll() is None:
            text = log.read_text(errors="replace")
            dovecot = re.search(r"Dovecot on 127\.0\.0\.1:(\d+)", text)
            azurite = re.search(r"Azurite in memory on 127\.0\.0\.1:(\d+)-(\d+)", text)
            if dovecot and azurite and stores is None:
                blob, table = int(azurite[1]), int(azurite[2])
                settings = StorageSettings(
                    connection_string=connection_string(blob, blob + 1, table)
                )
                stores = Stores.connect(settings)
            if stores is not None:
                try:
                    entries = timeline_entries(stores, ["Direction"])
                except HttpResponseError:  # the tables not created yet
                    entries = []
                if len(entries) == 8:
                    break
            time.sleep(0.5)
        assert stores is not None and dovecot and azurite, log.read_text()[-3000:]
        # The sample's four conversations; support's replies, read from Sent, are ours.
        assert sorted(r["DisplayId"] for r in records(stores)) == [f"CASE-{n}" for n in range(1, 5)]
        assert Counter(e["Direction"] for e in timeline_entries(stores, ["Direction"])) == {
            "in": 5,
            "out": 3,
        }
    finally:
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(120)
    assert code == 0, log.read_text()[-3000:]
    # Everything it started is gone: Dovecot, Azurite, and the config's server with its mail.
    assert not listening(int(dovecot[1])) and not listening(int(azurite[1]))
    assert "user support@mailfiler.example" in log.read_text()
    assert (REPO / ".demo-imap" / "mailfiler.yaml").read_text().count("password") == 1
