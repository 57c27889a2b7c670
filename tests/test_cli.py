"""The `mailfiler` command's config check, import --process and records views."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.cli.azurite import REPO, Azurite
from shared.store.stores import Stores

# The interpreter running the tests runs the command too (3.11, and 3.12 in `make unit-py312`).
MAILFILER = [sys.executable, "-m", "shared.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**(env if env is not None else os.environ), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*MAILFILER, *args], capture_output=True, text=True, timeout=120, env=full_env
    )


def test_config_check_accepts_the_sample() -> None:
    result = run("config", "check", str(REPO / "samples" / "mailfiler.yaml"))
    assert result.returncode == 0, result.stderr
    assert "OK: 1 mailbox(es), 1 record type(s), 1 route(s)" in result.stdout


def test_config_check_reports_every_problem_and_missing_secrets(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        "  - {name: a, kind: local, record_type: nope}\n"
        "  - {name: b, kind: imap, host: h, username: u, password: x, record_type: case}\n"
    )
    result = run("config", "check", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[:2] == [
        f"{bad}:3: mailboxes.a: 'path' is required here",
        f"{bad}:3: mailboxes.a.record_type: unknown record type 'nope' (known: case)",
    ]
    assert lines[2].startswith(f"{bad}:4: mailboxes.b: 'password' would put a secret")

    good = tmp_path / "good.yaml"
    good.write_text(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        "  - {name: b, kind: imap, host: h, username: u, password_setting: MF_TEST_UNSET,"
        " record_type: case}\n"
    )
    result = run("config", "check", str(good))
    assert result.returncode == 0
    assert "names app setting MF_TEST_UNSET, which is not set" in result.stderr


def test_config_check_on_a_missing_file() -> None:
    result = run("config", "check", "/nonexistent/mailfiler.yaml")
    assert result.returncode == 1
    assert "cannot read the file" in result.stderr


@pytest.mark.azurite
def test_import_process_then_records(
    stores: Stores, azurite: Azurite, sample_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "mailfiler.yaml"
    config.write_text(
        (REPO / "samples" / "mailfiler.yaml")
        .read_text()
        .replace("path: mail", f"path: {sample_dir}")
    )
    env = {"AzureWebJobsStorage": azurite.connection_string, "PATH": "/usr/bin:/bin"}
    common = ["--config", str(config), "--settings", str(tmp_path / "none.json")]
    result = run(
        "import", str(sample_dir), "--mailbox", "sample", "--quiet", "--process", *common, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "8 found, 8 queued, 0 already imported, 0 failed" in result.stdout

    listed = run("records", "list", "--json", *common, env=env)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["messages"] for r in rows) == [1, 2, 2, 3]
    assert sorted(r["id"] for r in rows) == ["CASE-1", "CASE-2", "CASE-3", "CASE-4"]

    billing = next(r for r in rows if r["fields"])
    shown = run("records", "show", billing["id"], "--json", *common, env=env)
    record = json.loads(shown.stdout)
    assert record["fields"] == {"ProblemType": "Billing"}
    assert [e["subject"] for e in record["timeline"]] == [
        "Invoice 2291 charges us twice",
        "RE: Invoice 2291 charges us twice",
    ]
    missing = run("records", "show", "CASE-99", *common, env=env)
    assert missing.returncode == 1 and "no record CASE-99" in missing.stderr

    trail = run("audit", "--record", billing["id"], "--json", *common, env=env)
    acts = [json.loads(line) for line in trail.stdout.splitlines()]
    # created once by the pipeline; mark_read after each of its two mails (sample config)
    assert [a["action"] for a in acts].count("create") == 1, acts
    assert [a["action"] for a in acts].count("mailbox_action") == 2, acts
    assert {a["record_key"] for a in acts} == {record["key"]}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    day = run("audit", "--day", today, "--json", *common, env=env)
    assert sum(1 for line in day.stdout.splitlines() if '"create"' in line) == 4
    bad = run("audit", "--day", "24.11.2026", *common, env=env)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr

    status = run("mailboxes", "status", "--json", *common, env=env)
    (sample,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert sample["name"] == "sample" and sample["status"] in ("ok", "pending")
    enabled = run("mailboxes", "enable", "sample", *common, env=env)
    assert enabled.returncode == 0 and "polled again" in enabled.stdout
    unknown = run("mailboxes", "enable", "nope", *common, env=env)
    assert unknown.returncode == 1 and "no mailbox 'nope'" in unknown.stderr


def test_unknown_mailbox_is_refused(tmp_path: Path) -> None:
    result = run(
        "import",
        str(tmp_path),
        "--mailbox",
        "nope",
        "--config",
        str(REPO / "samples" / "mailfiler.yaml"),
        "--settings",
        str(tmp_path / "x.json"),
        env={"AzureWebJobsStorage": "UseDevelopmentStorage=true", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "mailbox 'nope' is not in the configuration (known: sample)" in result.stderr
