"""The app on the local host against a bench's own Azurite, with one local mailbox `bench`:
what the storage and console benches both set up."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from shared.cli.azurite import REPO, Azurite
from shared.cli.host import LocalHost, QueueSettings, registered_functions
from shared.core.config import parse_config
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings
from shared.store.stores import Stores


def local_app(azurite: Azurite, stores: Stores, folder: Path) -> tuple[AppContext, LocalHost]:
    """The context (mailbox `bench` reading `folder`, record type `case`) and a local host
    with host.json's queue settings, running the functions function_app.py registers."""
    config = parse_config(
        "record_types: [{name: case, prefix: CASE}]\n"
        f"mailboxes: [{{name: bench, kind: local, path: {folder}, record_type: case}}]\n"
    )
    settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    ctx = AppContext(settings, config, folder, stores)
    set_context(ctx)
    sys.path.insert(0, str(REPO))
    functions = registered_functions(importlib.import_module("function_app"))
    queues = QueueSettings.from_host_json(REPO / "host.json")
    return ctx, LocalHost(functions, stores.queues, queues)
