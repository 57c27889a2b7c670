"""`mailfiler status` and the telemetry gauges: a mailbox with a wrong IMAP password shows as
failing, with its reason, while the other keeps filing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry
from shared.cli.azurite import Azurite, free_port
from shared.cli.main import main
from shared.core.config import ImapMailbox, LocalMailbox
from shared.services.context import AppContext, set_context
from shared.services.health import expiry_hours, health_report
from shared.services.mailboxes import mailbox_status
from shared.settings import AppSettings, load_config
from shared.stages.polls import poll_all, schedule_polls
from shared.store.stores import Stores
from tests.fakes.dovecot import Dovecot, require_dovecot

from .helpers import local_host, records

pytestmark = pytest.mark.azurite
USER = "support@example.test"


@pytest.fixture
def two_mailboxes(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppContext]:
    require_dovecot()
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("IMAP_PASSWORD", "wrong-password")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "1.eml").write_bytes(
        b"From: ann@example.org\r\nTo: files@example.test\r\nSubject: Hello\r\n"
        b"Message-ID: <hello@example.org>\r\n\r\nHi.\r\n"
    )
    with Dovecot(users={USER: "right-password"}) as server:
        config = tmp_path / "mailfiler.yaml"
        config.write_text(
            "record_types: [{name: case, prefix: CASE}]\n"
            "mailboxes:\n"
            f"  - {{name: files, kind: local, path: '{inbox}', record_type: case}}\n"
            f"  - {{name: support, kind: imap, host: 127.0.0.1, port: {server.port}, tls: none,\n"
            f"      username: {USER}, password_setting: IMAP_PASSWORD, record_type: case}}\n"
        )
        monkeypatch.setenv("MAILFILER_CONFIG", str(config))
        settings = AppSettings.model_validate(
            {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(config)}
        )
        ctx = AppContext(settings, load_config(config), tmp_path, stores)
        set_context(ctx)
        yield ctx
    set_context(None)


def test_status_shows_the_failing_mailbox_with_its_reason_while_the_other_files(
    two_mailboxes: AppContext, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = two_mailboxes
    outcome = poll_all(ctx, datetime.now(UTC))
    assert outcome == {"files": "queued 1", "support": "failed"}
    local_host(ctx.stores.queues, visibility_timeout=0).drain()
    assert len(records(ctx.stores)) == 1  # the other mailbox filed

    assert main(["status", "--settings", "/nonexistent.json"]) == 0
    out = capsys.readouterr().out
    assert "status: degraded" in out
    (line,) = [x for x in out.splitlines() if x.strip().startswith("support")]
    assert "failing" in line and "1 failures" in line and "AUTHENTICATIONFAILED" in line
    assert "wrong-password" not in out
    (files,) = [x for x in out.splitlines() if x.strip().startswith("files")]
    assert " ok " in files


def test_the_snapshot_gauges_carry_the_names_the_alerts_read(
    two_mailboxes: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = two_mailboxes
    poll_all(ctx, datetime.now(UTC))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(metrics, "get_meter", provider.get_meter)
    monkeypatch.setitem(telemetry._state, "configured", True)
    monkeypatch.setattr(telemetry, "_instruments", None)
    now = datetime.now(UTC)
    report = health_report(ctx, now)
    telemetry.record_snapshot(report, expiry_hours(report, now))
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    failures = {p.attributes["mailbox"]: p.value for p in points["mailfiler.mailbox_failures"]}
    assert failures == {"files": 0, "support": 1}
    poisons = {p.attributes["queue"] for p in points["mailfiler.poison_messages"]}
    assert "inbound-poison" in poisons and "outbound-poison" in poisons
    assert telemetry.auth_client_id("ClientId=abc;Authorization=AAD") == (True, "abc")
    assert telemetry.auth_client_id("") == (False, None)


def test_a_wrong_password_says_which_setting_to_fix_in_one_log_line(
    two_mailboxes: AppContext,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = two_mailboxes
    support = ctx.config.mailbox("support")
    assert isinstance(support, ImapMailbox)
    server = f"IMAP server 127.0.0.1:{support.server_port}"
    files = ctx.config.mailbox("files")
    assert isinstance(files, LocalMailbox)
    (Path(files.path) / "2.eml").write_bytes(
        "From: olga@example.org\r\nTo: files@example.test\r\nSubject: Счёт №7\r\n"
        "Message-ID: <schet-7@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "\r\nДобрый день.\r\n".encode()
    )
    with caplog.at_level(logging.INFO):
        assert poll_all(ctx, datetime.now(UTC))["support"] == "failed"
        local_host(ctx.stores.queues, visibility_timeout=0).drain()
    # Records by their number, mail by Message-ID and subject, not by hex keys.
    filed = sorted(r.getMessage() for r in caplog.records if r.name == "shared.stages.file")
    assert filed == [
        "file: mailbox=files record=CASE-1 action=create message-id='<hello@example.org>' "
        "subject='Hello'",
        "file: mailbox=files record=CASE-2 action=create message-id='<schet-7@example.org>' "
        "subject='Счёт №7'",
    ] or filed == [
        "file: mailbox=files record=CASE-1 action=create message-id='<schet-7@example.org>' "
        "subject='Счёт №7'",
        "file: mailbox=files record=CASE-2 action=create message-id='<hello@example.org>' "
        "subject='Hello'",
    ]
    # One line naming the mailbox and the setting; no traceback for an expected failure.
    assert "Traceback" not in caplog.text
    assert all(r.exc_info is None for r in caplog.records)
    (failed,) = [r.getMessage() for r in caplog.records if r.name == "shared.stages.polls"]
    assert failed == (
        f"poll: mailbox=support failed: {server} refused the login of {USER}: "
        "[AUTHENTICATIONFAILED] Authentication failed. (fix: check the password in app setting "
        "IMAP_PASSWORD (mailboxes.support.password_setting) and the user name "
        "(mailboxes.support.username))"
    )

    assert main(["status", "--settings", "/nonexistent.json"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = next(i for i, x in enumerate(lines) if x.strip().startswith("support"))
    assert lines[at].endswith(
        f"1 failures: {server} refused the login of {USER}: [AUTHENTICATIONFAILED] "
        "Authentication failed."
    )
    assert lines[at + 1].strip() == (
        "fix: check the password in app setting IMAP_PASSWORD "
        "(mailboxes.support.password_setting) and the user name (mailboxes.support.username)"
    )
    assert "b'" not in out

    # What a page prints: the error and the fix apart (the console's operations page).
    entry = health_report(ctx)["mailboxes"]["support"]
    assert entry["error"] == (
        f"{server} refused the login of {USER}: [AUTHENTICATIONFAILED] Authentication failed."
    )
    assert entry["fix"].startswith("check the password in app setting IMAP_PASSWORD")
    assert health_report(ctx)["mailboxes"]["files"]["error"] is None


def test_a_mailbox_whose_password_changed_is_polled_at_once(
    two_mailboxes: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = two_mailboxes
    now = datetime.now(UTC)
    assert poll_all(ctx, now)["support"] == "failed"
    later = now + timedelta(seconds=10)  # well inside poll_minutes (1)
    assert schedule_polls(ctx, later)["support"] == "not due"  # nothing changed: the interval
    monkeypatch.setenv("IMAP_PASSWORD", "right-password")
    assert schedule_polls(ctx, later)["support"] == "scheduled"
    assert poll_all(ctx, later)["support"] == "queued 0"


def test_a_missing_folder_and_a_server_away_say_what_to_fix(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens: the IMAP server is not running
    missing = tmp_path / "почта"  # never created
    monkeypatch.setenv("IMAP_PASSWORD", "secret")
    config = tmp_path / "mailfiler.yaml"
    config.write_text(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        f"  - {{name: files, kind: local, path: '{missing}', record_type: case}}\n"
        f"  - {{name: support, kind: imap, host: 127.0.0.1, port: {port}, tls: none,\n"
        f"      username: {USER}, password_setting: IMAP_PASSWORD, record_type: case}}\n"
    )
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(config)}
    )
    ctx = AppContext(settings, load_config(config), tmp_path, stores)
    assert poll_all(ctx, datetime.now(UTC)) == {"files": "failed", "support": "failed"}
    status = mailbox_status(ctx)
    assert (status["files"]["error"], status["files"]["fix"]) == (
        f"local mailbox files: {missing} does not exist",
        "create the folder, or set mailboxes.files.path (relative to the config file)",
    )
    assert (status["support"]["error"], status["support"]["fix"]) == (
        f"cannot reach IMAP server 127.0.0.1:{port} (connection refused)",
        "check mailboxes.support.host and mailboxes.support.port, and that the server is running",
    )
