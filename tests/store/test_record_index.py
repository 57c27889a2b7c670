"""Records listed newest first from their index rows (store/record_index.py), against Azurite:
across pages and types, with filters; a change of status moves with the index; records written
before the index are filled in once; a made-up continuation token is refused."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.core.config import Config, parse_config
from shared.core.contracts import RecordRef
from shared.services.audit import Actor
from shared.services.records import RecordError, list_records, update_record
from shared.store import records
from shared.store.keys import INDEX_MARKER, INDEX_ROWS, NUMBER_ROWS, after_prefix, number_row
from shared.store.stores import RECORDS, Stores

pytestmark = pytest.mark.azurite
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ACTOR = Actor(name="tester", source="test")
CONFIG = """
record_types:
  - {{name: case, prefix: CASE}}
  - {{name: order, prefix: ORD}}
mailboxes:
  - {{name: support, kind: local, path: "{folder}", record_type: case}}
  - {{name: sales, kind: local, path: "{folder}", record_type: order}}
routes:
  - {{name: all, record_type: case}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return parse_config(CONFIG.format(folder=tmp_path))


def _seed(stores: Stores, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` records of both types, created in a shuffled order at shuffled times (so neither
    key nor number order is the time order), as the file stage creates them."""
    rng = random.Random(seed)
    minutes = rng.sample(range(10_000), count)
    made = []
    for i, minute in enumerate(minutes):
        kind, prefix = ("case", "CASE") if rng.random() < 0.6 else ("order", "ORD")
        columns = {
            "Title": f"record {i} ünïcödé",
            "Status": rng.choice(["new", "open"]),
            "CreatedAt": START + timedelta(minutes=minute),
            "Mailbox": "support" if kind == "case" else "sales",
            "Contact": rng.choice(["ann@example.com", "bob@example.com"]),
        }
        ref = RecordRef(type=kind, key=f"{rng.getrandbits(128):032x}")
        number, existing = records.create(stores, ref, prefix, columns)
        assert existing is None and number is not None
        made.append({**columns, "type": kind, "key": ref.key, "id": f"{prefix}-{number}"})
    return made


def _all_pages(stores: Stores, config: Config, limit: int, **filters: Any) -> list[str]:
    """Every page of a list, following its tokens; the ids in the order they came."""
    ids: list[str] = []
    token: str | None = None
    for _ in range(1000):
        page, token = list_records(
            stores,
            config,
            type_name=filters.get("type_name"),
            status=filters.get("status"),
            contact=filters.get("contact"),
            text=None,
            limit=limit,
            continuation=token,
            mailbox=filters.get("mailbox"),
        )
        assert len(page) <= limit
        ids += [r["id"] for r in page]
        if token is None:
            return ids
    raise AssertionError("the list never ended")


def _newest_first(made: list[dict[str, Any]], **match: Any) -> list[str]:
    chosen = [r for r in made if all(r[k] == v for k, v in match.items())]
    return [r["id"] for r in sorted(chosen, key=lambda r: r["CreatedAt"], reverse=True)]


def test_lists_come_newest_first_over_pages_types_and_filters(
    stores: Stores, config: Config
) -> None:
    made = _seed(stores, 37, seed=7)
    assert {r["type"] for r in made} == {"case", "order"}
    assert _all_pages(stores, config, 5) == _newest_first(made)
    assert _all_pages(stores, config, 200) == _newest_first(made)
    assert _all_pages(stores, config, 4, type_name="order") == _newest_first(made, type="order")
    assert _all_pages(stores, config, 3, status="open") == _newest_first(made, Status="open")
    assert _all_pages(stores, config, 6, contact="BOB@example.com") == _newest_first(
        made, Contact="bob@example.com"
    )
    assert _all_pages(stores, config, 2, type_name="case", status="new", mailbox="support") == (
        _newest_first(made, type="case", Status="new")
    )
    # A record is listed the moment it is written (no index to rebuild), and a change of its
    # title shows at once.
    ref = RecordRef(type="order", key="e" * 32)
    number, _ = records.create(
        stores, ref, "ORD", {"Title": "just in", "Status": "new", "CreatedAt": START}
    )
    first, _ = list_records(
        stores,
        config,
        type_name=None,
        status=None,
        contact=None,
        text=None,
        limit=1,
        continuation=None,
    )
    assert [r["id"] for r in first] != [f"ORD-{number}"]  # START is older than every seed
    records.merge(
        stores, ref, {"Title": "renamed"}, current=stores.table(RECORDS).get(ref.type, ref.key)
    )
    found, _ = list_records(
        stores,
        config,
        type_name=None,
        status=None,
        contact=None,
        text="renamed",
        limit=200,
        continuation=None,
    )
    assert [r["id"] for r in found] == [f"ORD-{number}"]
    assert _all_pages(stores, config, 9)[-1] == f"ORD-{number}"


def test_a_change_of_status_moves_with_the_index(stores: Stores, config: Config) -> None:
    made = _seed(stores, 12, seed=3)
    target = next(r for r in made if r["Status"] == "new")
    row = stores.table(RECORDS).get(target["type"], target["key"])
    assert row is not None
    after = update_record(stores, config, row, {"status": "pending"}, ACTOR, START)
    assert after["status"] == "pending"
    assert _all_pages(stores, config, 3, status="pending") == [target["id"]]
    assert target["id"] not in _all_pages(stores, config, 3, status="new")
    # The index row shows what the record shows, and nothing else is listed twice.
    everything = _all_pages(stores, config, 7)
    assert sorted(everything) == sorted(r["id"] for r in made)


def _write_without_index(stores: Stores, made: int) -> list[str]:
    """Records as code before the index wrote them: the record and its number's row only."""
    table = stores.table(RECORDS)
    ids = []
    for number in range(1, made + 1):
        key = f"{number:032x}"
        table.transact(
            [
                (
                    "insert",
                    {
                        "PartitionKey": "case",
                        "RowKey": key,
                        "Title": f"old {number}",
                        "Status": "new",
                        "CreatedAt": START + timedelta(hours=number),
                        "Number": number,
                        "DisplayId": f"CASE-{number}",
                    },
                ),
                (
                    "insert",
                    {"PartitionKey": "case", "RowKey": number_row(number), "RecordKey": key},
                ),
            ]
        )
        ids.append(f"CASE-{number}")
    return ids


def test_records_written_before_the_index_are_listed_after_the_fill(
    stores: Stores, config: Config
) -> None:
    old = _write_without_index(stores, 7)
    table = stores.table(RECORDS)
    assert list(table.partition("case", row_from=INDEX_ROWS)) == []
    assert table.get(*INDEX_MARKER) is None
    # The first list fills the index (and notes it done); the records then come newest first.
    assert _all_pages(stores, config, 3) == old[::-1]
    marker = table.get(*INDEX_MARKER)
    assert marker is not None and marker["Rows"] == 7
    index = list(table.partition("case", row_from=INDEX_ROWS))
    assert sorted(e["RecordKey"] for e in index) == sorted(f"{n:032x}" for n in range(1, 8))
    assert {e["Title"] for e in index} == {f"old {n}" for n in range(1, 8)}
    # Once only: a new process reads the marker and writes nothing; a fill run again by hand
    # (idempotent) rewrites the same rows.
    assert records.ensure_index(Stores(stores.account)) == 0
    assert records.fill_index(stores) == 7
    assert len(list(table.partition("case", row_from=INDEX_ROWS))) == 7
    # A record changed after the fill read it is read again, not indexed as it was.
    stale = table.get("case", f"{1:032x}")
    assert stale is not None
    table.upsert({"PartitionKey": "case", "RowKey": f"{1:032x}", "Status": "closed"})
    assert records._fill_one(table, stale) == 1
    (first,) = [e for e in table.partition("case", row_from=INDEX_ROWS) if e["Number"] == 1]
    assert first["Status"] == "closed"
    # New numbers still follow the highest (the index rows sort after the number rows).
    number, existing = records.create(
        stores,
        RecordRef(type="case", key="f" * 32),
        "CASE",
        {"Title": "new one", "Status": "new", "CreatedAt": START + timedelta(days=30)},
    )
    assert (number, existing) == (8, None)
    numbers = table.partition("case", row_from=NUMBER_ROWS, row_before=after_prefix(NUMBER_ROWS))
    assert len(list(numbers)) == 8
    assert _all_pages(stores, config, 50, type_name="case") == ["CASE-8", *old[::-1]]
    # Readers of records see no index rows (nor the marker) as records.
    assert sorted(r["DisplayId"] for r in records.all_records(stores)) == sorted([*old, "CASE-8"])


def _token(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def test_made_up_continuation_tokens_are_refused(stores: Stores, config: Config) -> None:
    _seed(stores, 6, seed=5)
    page, token = list_records(
        stores,
        config,
        type_name="case",
        status=None,
        contact=None,
        text=None,
        limit=1,
        continuation=None,
    )
    assert page and token
    handed = json.loads(base64.urlsafe_b64decode(token))
    assert set(handed) == {"after", "type"} and handed["type"] == "case"
    after = handed["after"]
    hostile = [
        "%%%",
        "ü",
        "W" * 5000,
        _token("abc"),
        _token([1, 2]),
        _token({}),
        _token({"after": after}),
        _token({"after": after, "type": "order"}),  # a type this list does not read
        _token({"after": after, "type": "case", "more": 1}),
        _token({"after": "n-000000000001", "type": "case"}),  # a number row, not an index row
        _token({"after": 5, "type": "case"}),
        _token({"after": None, "type": "case"}),
        _token({"after": after, "type": ["case"]}),
        _token({"after": INDEX_ROWS + "\x00", "type": "case"}),
        _token({"after": INDEX_ROWS + "a/b#c", "type": "case"}),
        _token({"after": INDEX_ROWS + "x" * 2000, "type": "case"}),
        _token({"PartitionKey": "case", "RowKey": "0"}),  # the SDK's own, as once handed out
    ]
    for bad in hostile:
        with pytest.raises(RecordError) as caught:
            list_records(
                stores,
                config,
                type_name="case",
                status=None,
                contact=None,
                text=None,
                limit=1,
                continuation=bad,
            )
        assert (caught.value.status, caught.value.code) == (400, "bad_continuation"), bad
    # The token we handed out goes on where the page stopped.
    rest, _ = list_records(
        stores,
        config,
        type_name="case",
        status=None,
        contact=None,
        text=None,
        limit=200,
        continuation=token,
    )
    assert page[0]["id"] not in [r["id"] for r in rest] and rest
