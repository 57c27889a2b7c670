"""Shared fixtures: one Azurite per test process (each xdist worker), fresh storage for each test
that asks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.cli.azurite import REPO, Azurite
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings
from shared.store.account import RequestCounter, StorageSettings
from shared.store.stores import QUEUES, TABLES, Stores, poison

SAMPLES = REPO / "samples"
CORPORA = REPO / "tests" / "data" / "corpora"


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite per test process: under pytest-xdist each worker has its own, on its own free
    ports, so no test sees another worker's storage. A port taken between the pick and the
    bind (another worker's server starting at that moment) fails the start: pick again."""
    for attempt in range(3):
        server = Azurite()
        try:
            server.start()
            break
        except RuntimeError:
            server.stop()
            if attempt == 2:
                raise
    yield server
    server.stop()


@pytest.fixture
def counter() -> RequestCounter:
    return RequestCounter()


@pytest.fixture
def stores(azurite: Azurite, counter: RequestCounter) -> Iterator[Stores]:
    """Storage emptied before the test: tables dropped, queues cleared. The drops and clears
    (some 60 requests) go out together rather than one after another: one after another they
    were most of a short test's setup."""
    s = Stores.connect(StorageSettings(connection_string=azurite.connection_string), counter)
    tables = [s.table(name).client for name in TABLES]  # built one after another (see create)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda table: table.delete_table(), tables))
        s.ensure()  # the tables again, all at once (and the queues on a worker's first test)
        list(pool.map(s.queues.clear, [q for queue in QUEUES for q in (queue, poison(queue))]))
    counter.reset()
    yield s


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    target = tmp_path / "mail"
    shutil.copytree(SAMPLES / "mail", target)
    return target


@pytest.fixture
def context(stores: Stores, azurite: Azurite, sample_dir: Path) -> Iterator[AppContext]:
    config_file = sample_dir.parent / "mailfiler.yaml"
    config_file.write_text(
        (SAMPLES / "mailfiler.yaml").read_text().replace("path: mail", f"path: {sample_dir}")
    )
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(config_file)}
    )
    from shared.settings import load_config

    ctx = AppContext(settings, load_config(config_file), sample_dir.parent, stores)
    set_context(ctx)
    yield ctx
    set_context(None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow scenarios first (a stable sort: the rest keep their order). Under xdist they then
    start at once on different workers while the short tests fill in around them, instead of
    one of them starting last and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
