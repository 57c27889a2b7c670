"""`mailfiler status` and the telemetry gauges: a mailbox with a wrong IMAP password shows as
failing, with its reason, while the other keeps filing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry
from shared.cli.azurite import Azurite
from shared.cli.main import main
from shared.services.context import AppContext, set_context
from shared.services.health import expiry_hours, health_report
from shared.settings import AppSettings, load_config
from shared.stages.polls import poll_all
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
