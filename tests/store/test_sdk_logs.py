"""The Azure SDKs log each HTTP request at INFO; the app turns that down when it starts, so the
Functions worker does not ship several records per storage call to Application Insights."""

from __future__ import annotations

import logging

import pytest

from shared.pipeline.context import SDK_REQUEST_LOGGER, _quiet_sdk_request_logs
from shared.store.stores import INBOUND, Stores

pytestmark = pytest.mark.azurite


def test_the_sdk_request_logs_are_quiet_once_the_app_starts(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger(SDK_REQUEST_LOGGER)
    before = logger.level
    logger.setLevel(logging.NOTSET)
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
        logger.setLevel(before)
