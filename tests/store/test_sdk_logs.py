"""The Azure SDKs log each HTTP request at INFO; the app turns that down when it starts, so the
Functions worker does not ship several records per storage call to Application Insights."""

from __future__ import annotations

import logging

import pytest

from shared.services.context import SDK_REQUEST_LOGGER, _quiet_sdk_request_logs
from shared.store.stores import INBOUND, Stores

pytestmark = pytest.mark.azurite


def test_the_sdk_request_logs_are_quiet_once_the_app_starts(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    # The logger and its parents as a fresh worker has them: no level of their own (another
    # test may have run the CLI, which turns "azure" down).
    parts = SDK_REQUEST_LOGGER.split(".")
    chain = [logging.getLogger(".".join(parts[:n])) for n in range(1, len(parts) + 1)]
    logger = chain[-1]
    before = [each.level for each in chain]
    for each in chain:
        each.setLevel(logging.NOTSET)
    try:
        with caplog.at_level(logging.INFO):  # what the Functions worker passes on
            stores.queues.depth(INBOUND)
            assert "Request URL" in caplog.text  # the SDK does log every request
            caplog.clear()
            _quiet_sdk_request_logs()
            stores.queues.depth(INBOUND)
            assert "Request URL" not in caplog.text
            logger.setLevel(logging.INFO)  # chosen on purpose: left alone
            _quiet_sdk_request_logs()
            assert logger.level == logging.INFO
    finally:
        for each, level in zip(chain, before, strict=True):
            each.setLevel(level)
