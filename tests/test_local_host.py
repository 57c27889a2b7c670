"""`mailfiler run` and `mailfiler import` as a user runs them: processes, real HTTP, Azurite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.cli.azurite import REPO, Azurite, free_port
from shared.store.stores import CONTACTS, FILING, INBOUND, QUEUES, Stores

from .helpers import filed_count, filed_keys, records, timeline_counts, timeline_entries

pytestmark = pytest.mark.azurite
# The interpreter running the tests runs the command too (3.11, and 3.12 in `make unit-py312`).
MAILFILER = [sys.executable, "-m", "shared.cli"]


def write_config(tmp: Path, mail: Path) -> Path:
    config = tmp / "mailfiler.yaml"
    config.write_text(
        (REPO / "samples" / "mailfiler.yaml").read_text().replace("path: mail", f"path: {mail}")
    )
    return config


def env_for(azurite: Azurite, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "PYTHONPATH": str(REPO),
        **extra,
    }


def get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except OSError:
        return 0, {}  # not listening yet


def status_of(url: str, headers: dict[str, str], method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def host_process(
    stores: Stores, azurite: Azurite, sample_dir: Path, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    config = write_config(tmp_path, sample_dir)
    process = subprocess.Popen(
        [
            *MAILFILER,
            "run",
            "--port",
            str(port),
            "--config",
            str(config),
            "--settings",
            str(tmp_path / "none.json"),
        ],
        env=env_for(azurite),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    yield f"http://127.0.0.1:{port}", process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_run_serves_health_and_files_the_sample_mail_within_a_minute(
    host_process: tuple[str, subprocess.Popen[bytes]],
    stores: Stores,
    azurite: Azurite,
    sample_dir: Path,
    tmp_path: Path,
) -> None:
    base, process = host_process
    config, mail = tmp_path / "mailfiler.yaml", sample_dir
    deadline = time.monotonic() + 60
    health: dict[str, object] = {}
    while time.monotonic() < deadline:
        status, health = get_json(f"{base}/api/health")
        queues = health.get("queues", {})
        assert isinstance(queues, dict)
        # Filed, and every queue drained: the map stage files inline and deletes its
        # inbound message only after the filing it did, and the after-filing actions run
        # on their own queue, so a filed mail alone does not mean the host is idle.
        settled = not any(queues.values())
        if status == 200 and len(filed_keys(stores)) == 8 and settled:
            break
        time.sleep(0.5)
    assert health["status"] == "ok", health
    assert health["storage"] == {"reachable": True}
    assert health["queues"] == {name: 0 for q in QUEUES for name in (q, f"{q}-poison")}
    mailboxes = health["mailboxes"]
    assert isinstance(mailboxes, dict)
    assert mailboxes["sample"]["status"] == "ok"
    assert sorted(timeline_counts(stores).values()) == [1, 2, 2, 3]
    # Numbered as `mailfiler explain` numbers the same mail (the host files in arrival order).
    explained = subprocess.run(
        [*MAILFILER, "explain", "--json", "--config", str(config), str(mail)],
        capture_output=True,
        text=True,
        check=True,
        env=env_for(azurite),
    ).stdout.splitlines()
    created = {
        r["decision"]["record"]: r["subject"]
        for r in map(json.loads, explained)
        if r["decision"]["action"] == "create"
    }
    assert {r["DisplayId"]: r["Title"] for r in records(stores)} == created
    assert len(created) == 4
    # Support's replies, read from the Sent folder the sample declares, are filed as ours.
    directions = Counter(
        (e.get("Folder"), e["Direction"]) for e in timeline_entries(stores, ["Folder", "Direction"])
    )
    assert directions == Counter({(None, "in"): 5, ("Sent", "out"): 3})
    contacts = {e.get("Address") for e in stores.table(CONTACTS).all()}
    assert not contacts & {"support@mailfiler.example", "billing@mailfiler.example"}
    assert "alice@contoso.example" in contacts
    assert get_json(f"{base}/api/nothing-here")[0] == 404
    # It answers only its own callers: not a page whose name points here (DNS rebinding), nor
    # one on another site (CSRF), the admin API included.
    port = base.rsplit(":", 1)[1]
    assert status_of(f"{base}/api/health", {"Host": f"evil.example:{port}"}) == 421
    admin = f"{base}/admin/functions/poll_mailboxes"
    assert status_of(admin, {"Origin": "http://evil.example"}, "POST") == 403
    assert status_of(f"{base}/api/records/case/1", {"Sec-Fetch-Site": "cross-site"}) == 403
    assert status_of(f"{base}/api/health", {"Origin": base}) == 200
    assert status_of(f"{base}/api/console/records", {}) == 200  # the console, on this machine

    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out.decode()[-2000:]
    assert f"mailfiler: console at {base}/api/console/records" in out.decode()


def generate_mail(folder: Path, conversations: int, per_conversation: int) -> int:
    folder.mkdir(parents=True)
    n = 0
    for c in range(conversations):
        ids: list[str] = []
        for i in range(per_conversation):
            mid = f"gen-{c}-{i}@load.example"
            refs = " ".join(f"<{x}>" for x in ids)
            thread = f"In-Reply-To: <{ids[-1]}>\nReferences: {refs}\n" if ids else ""
            prefix = "Re: " if ids else ""
            # Named round by round (every first mail, then every first reply...), as mail
            # arrives over days: a batch of 8 then never holds a reply with its parent, which
            # would wait for it on the queue (2 s, 4 s, 8 s: the map stage's delays).
            (folder / f"{i}-{c:04d}.eml").write_text(
                f"From: user{c}@load.example\nTo: support@mailfiler.example\n"
                f"Subject: {prefix}Generated conversation {c}\n"
                f"Date: Tue, 24 Nov 2026 10:{i:02d}:00 +0000\nMessage-ID: <{mid}>\n{thread}"
                f"\nMessage {i} of conversation {c}.\n"
            )
            ids.append(mid)
            n += 1
    return n


# Sized to prove it, not to be big (was 1,000 messages, 3.5 minutes): the worker is killed
# mid-batch with messages leased, a quarter of the mail filed, and what it held comes back.
CONVERSATIONS = 100
TOTAL = 4 * CONVERSATIONS


@pytest.mark.slow
def test_an_import_survives_a_killed_worker(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    mail = tmp_path / "generated"
    total = generate_mail(mail, conversations=CONVERSATIONS, per_conversation=4)
    assert total == TOTAL
    config = write_config(tmp_path, mail)
    env = env_for(azurite, MAILFILER_LOCAL_LEASE_SECONDS="5")
    base_cmd = ["--config", str(config), "--settings", str(tmp_path / "none.json")]

    imported = subprocess.run(
        [*MAILFILER, "import", str(mail), "--mailbox", "sample", "--quiet", *base_cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert f"{TOTAL} found, {TOTAL} queued, 0 already imported, 0 failed" in imported.stdout

    # Batches, as Azure takes them: the kill strands a whole leased batch.
    worker_cmd = [*MAILFILER, "run", "--no-http", "--no-timers", "--batches", *base_cmd]
    worker = subprocess.Popen(
        worker_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while filed_count(stores) < TOTAL // 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    worker.kill()  # mid-batch: messages it held come back after their lease
    worker.wait()
    filed_at_kill = filed_count(stores)
    assert 0 < filed_at_kill < TOTAL

    worker = subprocess.Popen(
        worker_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = filed_count(stores) == TOTAL
            if done and not stores.queues.depth(INBOUND) and not stores.queues.depth(FILING):
                break
            time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)

    keys = filed_keys(stores)
    assert len(keys) == len(set(keys)) == TOTAL
    counts = timeline_counts(stores)
    assert sum(counts.values()) == TOTAL
    assert Counter(counts.values()) == {4: CONVERSATIONS}
    numbers = [r["Number"] for r in records(stores)]
    assert len(numbers) == len(set(numbers)) == CONVERSATIONS
    assert stores.queues.depth("inbound-poison") == stores.queues.depth("filing-poison") == 0

    again = subprocess.run(
        [*MAILFILER, "import", str(mail), "--mailbox", "sample", "--quiet", *base_cmd],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert f"{TOTAL} found, 0 queued, {TOTAL} already imported, 0 failed" in again.stdout
    assert stores.queues.depth(INBOUND) == 0
