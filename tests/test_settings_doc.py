"""The README's settings table and local.settings.example.json name the same settings, and
every setting the code reads is in the table."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Identity-based storage (Azure only) and the per-secret settings the config file names.
AZURE_ONLY = {
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
}


def table_settings() -> set[str]:
    text = (REPO / "README.md").read_text()
    table = text[text.index("### App settings") : text.index("### The configuration file")]
    names: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", first):
                # "`AzureWebJobsStorage__blobServiceUri`, `__queueServiceUri`": the same prefix
                names.add(f"AzureWebJobsStorage{name}" if name.startswith("__") else name)
    return names


def test_the_example_settings_mirror_the_table() -> None:
    example = set(json.loads((REPO / "local.settings.example.json").read_text())["Values"])
    documented = table_settings()
    assert example - {"AzureWebJobsFeatureFlags"} <= documented
    assert documented - AZURE_ONLY <= example, documented - AZURE_ONLY - example


def test_every_setting_the_code_reads_is_documented() -> None:
    read: set[str] = set()
    for path in (REPO / "shared").rglob("*.py"):
        read.update(re.findall(r'environ(?:\.get\(|\[)"([A-Z][A-Za-z0-9_]*)"', path.read_text()))
        if path.name == "settings.py":
            read.update(re.findall(r'alias="([A-Za-z][A-Za-z0-9_]*)"', path.read_text()))
        read.update(re.findall(r'AliasChoices\("([A-Z][A-Za-z0-9_]*)"\)', path.read_text()))
        read.update(re.findall(r'^[A-Z_]+_SETTING = "([A-Z][A-Z0-9_]*)"', path.read_text(), re.M))
    # Read to honour the machine's CA and proxy configuration, not app settings.
    read -= {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    # Set by App Service itself (authentication on; running in Azure), never by the user.
    read -= {"WEBSITE_AUTH_ENABLED", "WEBSITE_INSTANCE_ID"}
    assert read, "found no settings: the pattern is broken"
    documented = table_settings()
    assert read <= documented, read - documented


def test_an_unresolved_key_vault_reference_counts_as_not_set(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.services.context import _drop_unresolved_references

    reference = "@Microsoft.KeyVault(VaultName=kv-mf;SecretName=graph-client-state-secret)"
    monkeypatch.setenv("GRAPH_CLIENT_STATE_SECRET", reference)
    monkeypatch.setenv("MAILFILER_LOG_LEVEL", "INFO")
    _drop_unresolved_references()
    assert "GRAPH_CLIENT_STATE_SECRET" not in os.environ
    assert os.environ["MAILFILER_LOG_LEVEL"] == "INFO"
    assert "GRAPH_CLIENT_STATE_SECRET is an unresolved Key Vault reference" in caplog.text
