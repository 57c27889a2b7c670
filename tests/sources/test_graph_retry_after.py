"""Graph's Retry-After as the client reads it: seconds or an HTTP date, trusted up to an hour,
and nothing a hostile or broken header says turns into a crash or an endless pause."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta

import pytest

from shared.sources.base import SourceBusy, SourceUnavailable
from shared.sources.graph.client import (
    MAX_RETRY_AFTER,
    GraphError,
    GraphThrottled,
    GraphUnavailable,
    retry_after,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("1e9", MAX_RETRY_AFTER),
        ("inf", 0.5),  # not a number a server means: the usual back-off
        ("nan", 0.5),
        ("soon", 0.5),
        ("Пн, 07 дек 2026", 0.5),
    ],
)
def test_retry_after_values(header: str, expected: float) -> None:
    assert retry_after({"Retry-After": header}, 0) == expected


def test_retry_after_as_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    header = email.utils.format_datetime(when, usegmt=True)
    assert 85 <= retry_after({"retry-after": header}, 0) <= 90
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert retry_after({"Retry-After": past}, 0) == 0.0


def test_the_errors_are_what_the_pipeline_obeys() -> None:
    throttled = GraphThrottled(30.0, "POST /move", 503)
    assert isinstance(throttled, SourceBusy) and isinstance(throttled, GraphError)
    assert throttled.retry_after == 30.0 and throttled.status == 503
    unavailable = GraphUnavailable(0, "ConnectError", "refused", "GET /x")
    assert isinstance(unavailable, SourceUnavailable) and isinstance(unavailable, GraphError)
    assert not isinstance(unavailable, SourceBusy)
