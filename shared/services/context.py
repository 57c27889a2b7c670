"""Everything a function needs, built once per process (a warm worker reuses it)."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..core.config import Config
from ..settings import AppSettings, config_dir, load_config
from ..sources.base import MailboxSource
from ..sources.registry import open_source
from ..store.account import RequestCounter
from ..store.stores import Stores


@dataclass
class AppContext:
    settings: AppSettings
    config: Config
    base_dir: Path
    stores: Stores
    signing_keys: tuple[bytes, ...] = ()

    def source(self, mailbox: str) -> MailboxSource:
        return open_source(self.config, mailbox, self.base_dir, self.stores)


log = logging.getLogger(__name__)
_lock = threading.Lock()
_context: AppContext | None = None


def build_context(
    settings: AppSettings, counter: RequestCounter | None = None, *, ensure: bool = True
) -> AppContext:
    _drop_unresolved_references()
    _quiet_sdk_request_logs()
    config = load_config(settings.config_path)
    _start_telemetry()
    stores = Stores.connect(settings.storage(), counter=counter)
    if ensure:
        stores.ensure()
    return AppContext(
        settings, config, config_dir(settings.config_path), stores, signing_keys(config)
    )


KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
SDK_REQUEST_LOGGER = "azure.core.pipeline.policies.http_logging_policy"


def _quiet_sdk_request_logs() -> None:
    """The Azure SDKs log every HTTP request and answer, headers included, at INFO. The
    Functions worker passes INFO on to Application Insights: several multi-line records per
    filed mail, paid for in CPU on the webhook's path and in ingestion. Failures still log."""
    logger = logging.getLogger(SDK_REQUEST_LOGGER)
    if logger.level == logging.NOTSET:  # unless someone chose a level on purpose
        logger.setLevel(logging.WARNING)


def _drop_unresolved_references() -> None:
    """An app setting whose Key Vault reference could not be resolved (the secret is missing,
    or the identity may not read it) holds the reference text itself. Using that as a password
    or an HMAC key would be wrong and silent: treat it as unset, and say so."""
    for name, value in list(os.environ.items()):
        if value.startswith(KEY_VAULT_REFERENCE):
            log.error(
                "settings: %s is an unresolved Key Vault reference (is the secret there, may the "
                "app's identity read it?); treated as not set",
                name,
            )
            del os.environ[name]


def _start_telemetry() -> None:
    """Application Insights, when configured, set up beside the first request: importing the
    exporter takes about a second, which Graph's webhook must not wait for."""
    from ..telemetry import CONNECTION_SETTING, configure

    if os.environ.get(CONNECTION_SETTING):
        threading.Thread(target=configure, name="telemetry-setup", daemon=True).start()


def signing_keys(config: Config) -> tuple[bytes, ...]:
    """The keys of our signed Message-IDs, from the app settings the config names."""
    keys = []
    for name in config.signing.key_settings:
        value = os.environ.get(name)
        if value:
            keys.append(value.encode("utf-8"))
        else:
            log.warning("signing: app setting %s is not set; its key is skipped", name)
    return tuple(keys)


def get_context(*, ensure: bool = True) -> AppContext:
    """The process's context. `ensure=False` (Graph's webhook, which must answer within
    seconds even on a cold start) skips creating missing tables and queues; whoever next asks
    with `ensure=True` does it, once."""
    global _context
    with _lock:
        if _context is None:
            _context = build_context(AppSettings(), ensure=False)
        context = _context
    if ensure:
        context.stores.ensure()
    return context


def built_context() -> AppContext | None:
    """The process's context if it is built, else None; never waits or builds (for callers
    on an event loop)."""
    return _context


def set_context(context: AppContext | None) -> None:
    """Tests and the local host install their own context (None: build from settings again)."""
    global _context
    with _lock:
        _context = context
