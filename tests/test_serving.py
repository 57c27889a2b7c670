"""Two configurations, one storage: a process whose configuration differs from the one the
storage serves refuses to start (issue 17 point 9). Real processes on one Azurite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.cli.azurite import REPO, Azurite
from shared.core.config import parse_config
from shared.services.serving import (
    CLAIM,
    SERVING,
    ConfigConflict,
    claim,
    fingerprint,
)
from shared.store.stores import INBOUND, INGEST, MAILBOXES, Stores

pytestmark = pytest.mark.azurite
MAILFILER = [sys.executable, "-m", "shared.cli"]
CONFIG = """
record_types: [{{name: case, prefix: CASE}}]
mailboxes:
  - {{name: {mailbox}, kind: local, path: "{folder}", record_type: case}}
routes:
  - {{name: all, record_type: case}}
"""


def write_config(tmp: Path, name: str, mailbox: str) -> Path:
    folder = tmp / f"mail-{name}"
    folder.mkdir()
    # A mail without a Message-ID and one in Cyrillic: filing them needs nothing from outside.
    (folder / "1.eml").write_text(
        f"From: ivan@example.org\nTo: {mailbox}@example.com\nSubject: Привет\n\nТекст.\n"
    )
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(mailbox=mailbox, folder=folder))
    return path


def env_for(azurite: Azurite, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "AzureWebJobsStorage": azurite.connection_string,
        "PYTHONPATH": str(REPO),
        **extra,
    }


def cli(
    azurite: Azurite, tmp: Path, config: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MAILFILER, *args, "--config", str(config), "--settings", str(tmp / "none.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(azurite, **env),
        cwd=tmp,
    )


def import_into(
    azurite: Azurite, tmp: Path, config: Path, mailbox: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    folder = config.parent / f"mail-{config.stem}"
    return cli(azurite, tmp, config, "import", str(folder), "--mailbox", mailbox, "--quiet", *extra)


def start_run(azurite: Azurite, tmp: Path, config: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *MAILFILER,
            "run",
            "--no-http",
            "--no-timers",
            "--config",
            str(config),
            "--settings",
            str(tmp / "none.json"),
        ],
        env=env_for(azurite, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp,
    )


def wait_for_claim(stores: Stores, fp: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = stores.table(MAILBOXES).get(SERVING, CLAIM)
        if row is not None and row["Fingerprint"] == fp:
            return
        assert process.poll() is None, process.communicate()[0][-2000:]
        time.sleep(0.2)
    raise AssertionError("the running process never registered its configuration")


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
    return process.communicate(timeout=30)[0]


def test_a_second_configuration_is_refused_while_the_first_serves(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    support = write_config(tmp_path, "support", "support")
    other = write_config(tmp_path, "other", "billing")
    fp_support = fingerprint(parse_config(support.read_text()))
    fp_other = fingerprint(parse_config(other.read_text()))
    assert fp_support != fp_other
    running = start_run(azurite, tmp_path, support)
    try:
        wait_for_claim(stores, fp_support, running)
        refused = import_into(azurite, tmp_path, other, "billing", "--process")
        assert refused.returncode == 3, refused.stderr[-2000:]
        message = refused.stderr
        for part in (str(support), fp_support, str(other), fp_other):
            assert part in message, message
        assert "Mailboxes only there: support; only here: billing" in message
        assert "AzureWebJobsStorage" in message and "--force" in message
        # Refused before anything was queued: the serving process has nothing foreign to read.
        assert list(stores.table(INGEST).partition("billing")) == []
        assert stores.queues.depth(INBOUND) == 0
        second_host = cli(azurite, tmp_path, other, "run", "--no-http", "--no-timers")
        assert second_host.returncode == 3 and fp_other in second_host.stderr

        # The same configuration runs beside it, and its mail is filed.
        same = import_into(azurite, tmp_path, support, "support", "--process")
        assert same.returncode == 0, same.stderr[-2000:]
        assert "1 found, 1 queued" in same.stdout
        row = stores.table(MAILBOXES).get(SERVING, CLAIM)
        assert row is not None and row["Fingerprint"] == fp_support
        assert running.poll() is None  # still serving
    finally:
        out = stop(running)
    assert running.returncode == 0 and "not in the configuration" not in out
    # Stopped cleanly, it ended its claim: the other configuration starts without --force.
    after = import_into(azurite, tmp_path, other, "billing")
    assert after.returncode == 0, after.stderr[-2000:]


def test_a_stale_claim_is_taken_over_and_a_live_one_only_with_force(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    support = write_config(tmp_path, "support", "support")
    other = write_config(tmp_path, "other", "billing")
    config = parse_config(support.read_text())
    # A process that died ten minutes ago: its heartbeat is old, its claim expired.
    claim(stores, config, str(support), datetime.now(UTC) - timedelta(minutes=10))
    taken = import_into(azurite, tmp_path, other, "billing")
    assert taken.returncode == 0, taken.stderr[-2000:]
    row = stores.table(MAILBOXES).get(SERVING, CLAIM)
    assert row is not None and row["ConfigPath"] == str(other)
    assert row["Fingerprint"] == fingerprint(parse_config(other.read_text()))

    # A live claim (just renewed) refuses, and --force takes it over.
    claim(stores, config, str(support), datetime.now(UTC), force=True)
    assert import_into(azurite, tmp_path, other, "billing").returncode == 3
    forced = import_into(azurite, tmp_path, other, "billing", "--force")
    assert forced.returncode == 0, forced.stderr[-2000:]
    row = stores.table(MAILBOXES).get(SERVING, CLAIM)
    assert row is not None and row["ConfigPath"] == str(other)


def test_a_running_host_stops_when_another_configuration_is_forced_in(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    support = write_config(tmp_path, "support", "support")
    other = write_config(tmp_path, "other", "billing")
    running = start_run(azurite, tmp_path, support, MAILFILER_LOCAL_HEARTBEAT_SECONDS="0.5")
    try:
        wait_for_claim(stores, fingerprint(parse_config(support.read_text())), running)
        forced = import_into(azurite, tmp_path, other, "billing", "--force")
        assert forced.returncode == 0, forced.stderr[-2000:]
        running.wait(timeout=60)
    finally:
        out = stop(running)
    assert running.returncode == 3, out[-2000:]
    assert "another process took the storage over" in out and str(other) in out


def test_claims_in_process_azure_always_serves_and_renewal_never_shortens(
    stores: Stores, tmp_path: Path
) -> None:
    now = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    local = parse_config(CONFIG.format(mailbox="support", folder=tmp_path))
    deployed = parse_config(CONFIG.format(mailbox="support-new", folder=tmp_path))
    # The same configuration from two files is one fingerprint; a changed mailbox is another.
    assert fingerprint(local) == fingerprint(
        parse_config(CONFIG.format(mailbox="support", folder=tmp_path))
    )
    first = claim(stores, local, "a.yaml", now)
    assert first["Until"] == now + timedelta(seconds=90)
    with pytest.raises(ConfigConflict, match=r"a\.yaml"):
        claim(stores, deployed, "b.yaml", now + timedelta(seconds=10))
    # A new deployment's app always takes the storage (it must never be locked out by the
    # instance it replaces) and holds it for ten minutes; a local renewal of the same
    # configuration does not cut that short.
    azure = claim(
        stores, deployed, "b.yaml", now, kind="azure", ttl=timedelta(minutes=10), force=True
    )
    assert azure["Kind"] == "azure"
    renewed = claim(stores, deployed, "c.yaml", now + timedelta(seconds=5))
    assert renewed["Until"] == now + timedelta(minutes=10)
    assert renewed["ConfigPath"] == "b.yaml"  # the registration is the first holder's
    with pytest.raises(ConfigConflict, match=r"only here: support\."):
        claim(stores, local, "a.yaml", now + timedelta(minutes=9))
    # Expired: taken over without --force.
    later = claim(stores, local, "a.yaml", now + timedelta(minutes=11))
    assert later["Fingerprint"] == fingerprint(local)
