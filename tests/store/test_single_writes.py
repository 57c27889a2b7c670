"""A transaction of one write goes out as the plain call it is equivalent to (issue 22: a `$batch`
costs the SDK about three times the client CPU), and answers exactly as the transaction did:
False for a lost race, an error for anything else. Against Azurite, counted by its requests."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.cli.azurite import Azurite
from shared.store.account import RequestCounter, StorageSettings
from shared.store.stores import AUDIT, RECORDS, Stores

pytestmark = pytest.mark.azurite
ROW = {"PartitionKey": "заявки", "RowKey": "κλειδί-1", "Title": "打印机卡纸"}


def test_one_insert_is_a_plain_insert_and_a_second_one_loses(azurite: Azurite) -> None:
    counter = RequestCounter(record=True)
    own = Stores.connect(StorageSettings(connection_string=azurite.connection_string), counter)
    own.ensure()
    table = own.table(RECORDS)
    table.client.delete_table()
    table.create()
    counter.reset()
    assert table.transact([("insert", ROW)])
    assert not table.transact([("insert", {**ROW, "Title": "другое"})])
    row = table.get(ROW["PartitionKey"], ROW["RowKey"])
    assert row is not None and row["Title"] == "打印机卡纸"
    assert counter.calls is not None
    assert [(m, p.split("/")[-1]) for _, m, p in counter.calls] == [("POST", RECORDS)] * 2 + [
        (
            "GET",
            f"{RECORDS}(PartitionKey='%D0%B7%D0%B0%D1%8F%D0%B2%D0%BA%D0%B8',"
            "RowKey='%CE%BA%CE%BB%CE%B5%CE%B9%CE%B4%CE%AF-1')",
        )
    ]
    # Two rows in one partition: still one transaction.
    counter.reset()
    assert table.transact([("insert", {**ROW, "RowKey": "2"}), ("insert", {**ROW, "RowKey": "3"})])
    assert [p.split("/")[-1] for _, _, p in counter.calls] == ["$batch"]


def test_one_guarded_merge_loses_to_a_changed_or_missing_row(stores: Stores) -> None:
    table = stores.table(RECORDS)
    etag = table.insert(ROW)
    assert etag
    assert table.transact_if_unchanged([({**ROW, "Title": "два"}, etag)])
    # The ETag is stale now: nothing written.
    assert not table.transact_if_unchanged([({**ROW, "Title": "три"}, etag)])
    assert not table.transact_rows([("update", {**ROW, "RowKey": "нет"}, None)])
    # An insert guard (no ETag) on a row that is there: lost too.
    assert not table.transact_if_unchanged([({**ROW, "Title": "четыре"}, None)])
    row = table.get(ROW["PartitionKey"], ROW["RowKey"])
    assert row is not None and row["Title"] == "два"


def test_a_missing_table_is_an_error_not_a_lost_race(stores: Stores) -> None:
    table = stores.table(AUDIT)
    table.client.delete_table()
    for write in (
        lambda: table.transact_rows([("update", ROW, None)]),
        lambda: table.transact_if_unchanged([(ROW, "W/\"datetime'2026-01-01'\"")]),
        lambda: table.transact([("upsert", ROW)]),
    ):
        with pytest.raises(HttpResponseError) as caught:
            write()
        # Not a ResourceNotFoundError, which the guarded writes answer with False.
        assert not isinstance(caught.value, ResourceNotFoundError)


def test_one_upsert_in_a_batch_call_merges(stores: Stores) -> None:
    table = stores.table(RECORDS)
    table.insert({**ROW, "Status": "open"})
    assert table.upsert_batch([{**ROW, "Title": "новое"}]) == 1
    row = table.get(ROW["PartitionKey"], ROW["RowKey"])
    assert row is not None and (row["Title"], row["Status"]) == ("новое", "open")
