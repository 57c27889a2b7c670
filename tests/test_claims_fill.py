"""Index rows written before every index row had its claim (issue 22: a won claim answers
dedupe): the map stage reads the index until their claims are filled, so such mail polled again
is a sighting, never a second filing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.core.config import Config
from shared.sources.registry import open_source
from shared.stages.file import file_plan
from shared.stages.map import map_queued
from shared.store.account import StorageSettings
from shared.store.claims_fill import claims_complete, fill_claims
from shared.store.keys import CLAIM, CLAIMS_MARKER
from shared.store.stores import FILING, INBOUND, MESSAGES, Stores

from .helpers import records
from .test_rate_limit import NOW, ingest, key_of, make_config

pytestmark = pytest.mark.azurite
SENDER = "old@example.org"


def map_one(stores: Stores, config: Config, tmp_path: Path) -> list[str]:
    """Map the one inbound mail and file what that queued; the plans' actions."""
    (got,) = stores.queues.receive(INBOUND, max_messages=1, visibility_timeout=60)
    actions: list[str] = [p.action for p in map_queued(stores, config, got.body, now=NOW)]
    stores.queues.delete(INBOUND, got)
    for plan in stores.queues.receive(FILING, max_messages=8, visibility_timeout=60):
        file_plan(
            stores,
            config,
            plan.body,
            now=NOW,
            source_for=lambda name: open_source(config, name, tmp_path, stores),
        )
        stores.queues.delete(FILING, plan)
    return actions


def test_fresh_storage_needs_no_fill(stores: Stores) -> None:
    assert claims_complete(stores)
    assert stores.table(MESSAGES).get(*CLAIMS_MARKER) is not None
    assert fill_claims(stores) == 0


def test_an_index_row_without_its_claim_is_read_then_filled(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    ingest(stores, [(SENDER, 1, NOW, NOW)])
    assert map_one(stores, config, tmp_path) == ["create"]
    (record,) = records(stores)
    # As a build before the rule left it: the index row, no claim, no marker.
    messages = stores.table(MESSAGES)
    messages.client.delete_entity(key_of(SENDER, 1), CLAIM)
    messages.client.delete_entity(*CLAIMS_MARKER)
    upgraded = Stores.connect(StorageSettings(connection_string=azurite.connection_string))
    assert not claims_complete(upgraded)

    # The same mail, from another folder of the mailbox: the index is read, a sighting.
    ingest(upgraded, [(SENDER, 1, NOW + timedelta(minutes=1), NOW)])
    assert map_one(upgraded, config, tmp_path) == ["sighting"]
    assert len(records(upgraded)) == 1

    assert fill_claims(upgraded) == 1
    claim = messages.get(key_of(SENDER, 1), CLAIM)
    assert claim is not None and claim["RecordKey"] == record["RowKey"]
    assert claims_complete(upgraded)
    assert fill_claims(upgraded) == 0  # once
    ingest(upgraded, [(SENDER, 1, NOW + timedelta(minutes=2), NOW)])
    assert map_one(upgraded, config, tmp_path) == ["sighting"]
    assert len(records(upgraded)) == 1
