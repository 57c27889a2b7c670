"""schemathesis against /api/openapi.json on the local host: no request may end in a 5xx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from shared.cli.azurite import free_port
from shared.cli.local_http import LocalHttpServer
from shared.pipeline.context import AppContext
from shared.pipeline.poll import poll_all

from .helpers import local_host

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def api_schema(context: AppContext) -> Iterator[Any]:
    poll_all(context, NOW)
    host = local_host(context.stores.queues)
    host.drain()
    server = LocalHttpServer(("127.0.0.1", free_port()), host, route_prefix="api")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    schema.config.update(base_url=f"{base}/api")
    yield schema
    server.shutdown()
    server.server_close()


def test_no_server_errors(api_schema: Any) -> None:
    """Every operation, with generated valid and invalid inputs; any 5xx is a failure."""
    failures: list[str] = []
    calls = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal calls
            response = case.call()
            calls += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}"
                )

        run()
    assert calls >= 100
    assert failures == []
