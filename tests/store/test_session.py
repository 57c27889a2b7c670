"""The storage clients' HTTP session reads proxies and CA bundle once, not per request."""

from __future__ import annotations

import pytest

from shared.store.account import _session

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARS, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_no_proxy_configured_means_no_per_request_scan() -> None:
    session = _session("requests")
    assert session is not None and session.trust_env is False and session.proxies == {}


def test_a_proxy_and_a_ca_bundle_are_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    session = _session("requests")
    assert session is not None and session.trust_env is False
    assert session.proxies["https"] == "http://proxy.internal:3128"
    assert session.verify == "/etc/ssl/corp.pem"


def test_bypass_rules_beside_a_proxy_are_left_to_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,.blob.core.windows.net")
    session = _session("requests")  # requests honours NO_PROXY per call
    assert session is not None and session.trust_env is True
