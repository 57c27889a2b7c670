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
    config = load_config(settings.config_path)
    _start_telemetry()
    stores = Stores.connect(settings.storage(), counter=counter)
    if ensure:
        stores.ensure()
    return AppContext(
        settings, config, config_dir(settings.config_path), stores, signing_keys(config)
    )


def _start_telemetry() -> None:
    """Application Insights, when configured, set up beside the first request: importing the
    exporter takes about a second, which Graph's webhook must not wait for."""
    import os

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


def set_context(context: AppContext | None) -> None:
    """Tests and the local host install their own context (None: build from settings again)."""
    global _context
    with _lock:
        _context = context
