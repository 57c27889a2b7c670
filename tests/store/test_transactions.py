"""store/transactions.py sends a `$batch` without azure-core's multipart machinery (issue 22) and
must answer exactly as `TableClient.submit_transaction` does: the same rows written, the same
ETags, the same errors (the failing operation's code, a missing table). Each case runs both ways
against Azurite, side by side."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.store.stores import RECORDS, Stores
from shared.store.tables import to_storage
from shared.store.transactions import submit_transaction

pytestmark = pytest.mark.azurite
Submit = Callable[[TableClient, list[Any]], list[Any]]
WAYS: dict[str, Submit] = {
    "sdk": lambda client, ops: list(client.submit_transaction(ops)),
    "ours": submit_transaction,
}


def rows(partition: str, n: int) -> list[dict[str, Any]]:
    return [
        to_storage(
            {
                "PartitionKey": partition,
                "RowKey": f"κλειδί-{i:03d}",
                "Title": f"打印机卡纸 {i} — Принтер",
                "Count": 2**40 + i,  # Int64
                "Data": "ß€𝄞" * 50,
            }
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("way", list(WAYS))
def test_inserts_and_merges_are_written_with_their_etags(stores: Stores, way: str) -> None:
    client = stores.table(RECORDS).client
    partition = f"заявки-{way}"
    written = rows(partition, 100)  # the most one transaction may hold
    answers = WAYS[way](client, [("create", r) for r in written])
    assert len(answers) == 100
    for row, answer in zip(written, answers, strict=True):
        stored = client.get_entity(partition, row["RowKey"])
        assert stored["Title"] == row["Title"] and stored["Data"] == row["Data"]
        assert stored["Count"].value == row["Count"].value
        assert answer["etag"] == stored.metadata["etag"]
    merge = {"mode": UpdateMode.MERGE}
    WAYS[way](
        client,
        [("upsert", {**written[0], "Title": "изменено"}, merge), ("delete", written[1])],
    )
    assert client.get_entity(partition, written[0]["RowKey"])["Title"] == "изменено"
    with pytest.raises(ResourceNotFoundError):
        client.get_entity(partition, written[1]["RowKey"])


def failure(way: str, client: TableClient, ops: list[Any]) -> tuple[type, str | None, str]:
    with pytest.raises(HttpResponseError) as caught:
        WAYS[way](client, ops)
    return type(caught.value), getattr(caught.value, "error_code", None), str(caught.value)


def test_a_lost_race_fails_the_same_way_and_writes_nothing(stores: Stores) -> None:
    client = stores.table(RECORDS).client
    seen = {}
    for way in WAYS:
        first, second = rows(f"гонка-{way}", 2)
        client.create_entity(second)
        etag = client.get_entity(first["PartitionKey"], second["RowKey"]).metadata["etag"]
        client.upsert_entity({**second, "Title": "changed meanwhile"})
        guarded = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        exists = failure(way, client, [("create", first), ("create", second)])
        stale = failure(way, client, [("create", first), ("update", second, guarded)])
        seen[way] = (exists, stale)
        with pytest.raises(ResourceNotFoundError):
            client.get_entity(first["PartitionKey"], first["RowKey"])  # all or nothing
    for way in WAYS:
        (exists_type, exists_code, exists_text), (stale_type, stale_code, _) = seen[way]
        assert exists_type is TableTransactionError and exists_code == "EntityAlreadyExists"
        assert "already exists" in exists_text
        assert stale_type is TableTransactionError
        assert stale_code == "UpdateConditionNotSatisfied"
    # The same error type and code, and the same message (the operation's index and text).
    assert [e[:2] for e in seen["ours"]] == [e[:2] for e in seen["sdk"]]
    assert [e[2].split("RequestId")[0] for e in seen["ours"]] == [
        e[2].split("RequestId")[0] for e in seen["sdk"]
    ]


def test_a_missing_table_fails_the_same_way(stores: Stores) -> None:
    client = stores.table(RECORDS).client
    client.delete_table()
    found = {}
    for way in WAYS:
        exc_type, code, _ = failure(way, client, [("create", r) for r in rows("p", 2)])
        found[way] = (exc_type, code)
    assert found["ours"] == found["sdk"]
    assert issubclass(found["ours"][0], HttpResponseError)


def test_it_costs_less_client_cpu_than_the_sdk(stores: Stores) -> None:
    """What it is for: measured, not assumed (a two-entity transaction, as filing writes)."""
    client = stores.table(RECORDS).client
    spent = {}
    for way, submit in WAYS.items():
        started = time.process_time()
        for i in range(40):
            submit(client, [("upsert", r) for r in rows(f"cpu-{way}-{i}", 2)])
        spent[way] = time.process_time() - started
    assert spent["ours"] < spent["sdk"], spent
