"""Telemetry: OpenTelemetry to Application Insights when `APPLICATIONINSIGHTS_CONNECTION_STRING`
is set, nothing otherwise.

azure-monitor-opentelemetry (and the SDK under it) is imported only when configured, so the
webhook's cold start and local runs do not pay for it. With Entra authentication
(`APPLICATIONINSIGHTS_AUTHENTICATION_STRING=ClientId=<uami>;Authorization=AAD`, what the Bicep
sets, local auth being off) the exporter signs in with the managed identity.

Metrics (names are what infra/app/alerts.bicep reads; keep them in step):
- `mailfiler.mail_filed` (counter; mailbox, action): messages the file stage committed.
- `mailfiler.failures` (counter; stage, reason): a stage attempt that raised (the class name).
- `mailfiler.webhook_answer_ms` (histogram): Graph webhook answer time.
- `mailfiler.poison_messages` (gauge; queue): messages waiting in each poison queue.
- `mailfiler.mailbox_failures` (gauge; mailbox): consecutive failed polls.
- `mailfiler.credential_expiry_hours` (gauge; mailbox): hours until the nearest subscription
  or certificate expiry.
Logs go through Python logging (mailbox, message key and stage in the text; never bodies or
secrets), which the exporter ships as traces.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)
CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTH_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
_lock = threading.Lock()
_instruments: Instruments | None = None
_state = {"configured": False, "tried": False}


class Instruments:
    """The app's metric instruments, made once from the OpenTelemetry meter."""

    def __init__(self) -> None:
        from opentelemetry import metrics

        meter = metrics.get_meter("mailfiler")
        self.filed = meter.create_counter("mailfiler.mail_filed", description="mail filed")
        self.failures = meter.create_counter(
            "mailfiler.failures", description="stage attempts that raised"
        )
        self.webhook_ms = meter.create_histogram(
            "mailfiler.webhook_answer_ms", unit="ms", description="Graph webhook answer time"
        )
        self.poison = meter.create_gauge("mailfiler.poison_messages")
        self.mailbox_failures = meter.create_gauge("mailfiler.mailbox_failures")
        self.expiry_hours = meter.create_gauge("mailfiler.credential_expiry_hours", unit="h")


def auth_client_id(value: str) -> tuple[bool, str | None]:
    """(Entra authentication asked for, the managed identity's client id) from
    `ClientId=<id>;Authorization=AAD`."""
    parts = dict(p.split("=", 1) for p in value.split(";") if "=" in p)
    return parts.get("Authorization", "").upper() == "AAD", parts.get("ClientId") or None


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Set up the exporter once per process; False when no connection string is set."""
    env = os.environ if environ is None else environ
    with _lock:
        if _state["tried"]:
            return _state["configured"]
        _state["tried"] = True
        connection = env.get(CONNECTION_SETTING)
        if not connection:
            return False
        from azure.monitor.opentelemetry import configure_azure_monitor

        kwargs: dict[str, Any] = {"connection_string": connection, "logger_name": "shared"}
        aad, client_id = auth_client_id(env.get(AUTH_SETTING, ""))
        if aad:
            from azure.identity import ManagedIdentityCredential

            kwargs["credential"] = (
                ManagedIdentityCredential(client_id=client_id)
                if client_id
                else ManagedIdentityCredential()
            )
        configure_azure_monitor(**kwargs)
        _state["configured"] = True
        log.info("telemetry: exporting to Application Insights")
        return True


def instruments() -> Instruments | None:
    """The instruments when telemetry is configured, else None (callers skip recording)."""
    global _instruments
    if not _state["configured"]:
        return None
    with _lock:
        if _instruments is None:
            _instruments = Instruments()
        return _instruments


def record_snapshot(report: Mapping[str, Any], hours: Mapping[str, float]) -> None:
    """The health report's gauges (the telemetry timer calls this every five minutes)."""
    found = instruments()
    if found is None:
        return
    for queue, depth in report.get("queues", {}).items():
        if queue.endswith("-poison"):
            found.poison.set(int(depth), {"queue": queue})
    for name, entry in report.get("mailboxes", {}).items():
        found.mailbox_failures.set(int(entry.get("consecutive_failures", 0)), {"mailbox": name})
    for name, value in hours.items():
        found.expiry_hours.set(round(value, 1), {"mailbox": name})
