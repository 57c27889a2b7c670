"""A Graph mailbox wired to the fake Graph and to the local host over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.cli.host import LocalHost
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings, load_config
from shared.store.stores import Stores
from tests.fakes.graph import FakeGraph

from ..helpers import local_host
from ..serving import serve_api

TENANT, APP, APP_SECRET = "contoso-tenant", "app-mailfiler", "app-secret-value"
USER = "support@contoso.example"
CLIENT_STATE_SECRET = "client-state-secret-for-tests"


@dataclass
class GraphWorld:
    fake: FakeGraph
    ctx: AppContext
    host: LocalHost
    base: str  # the local host's API base URL, what Graph calls
    config_file: Path

    def reconfigure(self, mailbox_extra: str = "", graph_extra: str = "") -> None:
        write_config(self.config_file, self.fake, self.base, mailbox_extra, graph_extra)
        self.ctx = AppContext(
            self.ctx.settings,
            load_config(self.config_file),
            self.config_file.parent,
            self.ctx.stores,
        )
        set_context(self.ctx)


def write_config(
    file: Path, fake: FakeGraph, base: str, mailbox_extra: str = "", graph_extra: str = ""
) -> None:
    file.write_text(
        "record_types:\n"
        "  - {name: case, prefix: CASE}\n"
        "  - {name: task, prefix: TASK, statuses: [new, open, closed, cancelled]}\n"
        "mailboxes:\n"
        f"  - name: m365\n"
        f"    kind: graph\n"
        f"    user: {USER}\n"
        f"    tenant_id: {TENANT}\n"
        f"    client_id: {APP}\n"
        f"    client_secret_setting: GRAPH_APP_SECRET\n"
        f"    record_type: case\n"
        f"    graph_endpoint: {fake.base_url}\n"
        f"    login_endpoint: {fake.login_url}\n"
        f"{mailbox_extra}"
        "graph:\n"
        f"  notification_url: {base}\n"
        f"{graph_extra}"
    )


@pytest.fixture
def graph_world(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GraphWorld]:
    with FakeGraph() as fake:
        for name, value in fake.ca_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("GRAPH_APP_SECRET", APP_SECRET)
        monkeypatch.setenv("GRAPH_CLIENT_STATE_SECRET", CLIENT_STATE_SECRET)
        fake.add_app(TENANT, APP, APP_SECRET)
        fake.add_user(USER, tenant=TENANT)
        host = local_host(stores.queues, visibility_timeout=0)
        with serve_api(host) as served:
            config_file = tmp_path / "mailfiler.yaml"
            write_config(config_file, fake, served.base)
            settings = AppSettings.model_validate(
                {
                    "AzureWebJobsStorage": azurite.connection_string,
                    "MAILFILER_CONFIG": str(config_file),
                }
            )
            ctx = AppContext(settings, load_config(config_file), tmp_path, stores)
            set_context(ctx)
            try:
                yield GraphWorld(fake, ctx, host, served.base, config_file)
            finally:
                set_context(None)


def mime(n: int, *, reply_to: int | None = None, sender: str | None = None) -> bytes:
    parent = f"<m{reply_to}@customer.example>"
    thread = f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n" if reply_to is not None else ""
    subject = f"Re: Question {reply_to}" if reply_to is not None else f"Question {n}"
    return (
        f"From: {sender or f'customer{n}@customer.example'}\r\nTo: {USER}\r\n"
        f"Subject: {subject}\r\nMessage-ID: <m{n}@customer.example>\r\n{thread}"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nHello {n}.\r\n"
    ).encode()
