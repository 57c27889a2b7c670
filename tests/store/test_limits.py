"""Azure's limits, enforced even though Azurite would accept more (pure checks, no server)."""

from __future__ import annotations

import pytest
from azure.data.tables import EdmType, EntityProperty

from shared.store.errors import StorageLimitError
from shared.store.tables import check_key, to_storage


def entity(**props: object) -> dict[str, object]:
    return {"PartitionKey": "p", "RowKey": "r", **props}


@pytest.mark.parametrize("bad", ["a/b", "a\\b", "a#b", "a?b", "a\x00b", "tab\there", "del\x7f"])
def test_forbidden_key_characters_are_refused(bad: str) -> None:
    with pytest.raises(StorageLimitError, match="control character"):
        check_key("RowKey", bad)


def test_keys_over_one_kib_are_refused_and_hex_message_keys_fit() -> None:
    check_key("PartitionKey", "a" * 512)  # 1 KiB in UTF-16
    with pytest.raises(StorageLimitError, match="longer than 1 KiB"):
        check_key("PartitionKey", "a" * 513)


def test_string_property_over_64_kib_is_refused_in_utf16_terms() -> None:
    to_storage(entity(Text="x" * 32_768))
    with pytest.raises(StorageLimitError, match="Text is over 64 KiB"):
        to_storage(entity(Text="x" * 32_769))
    with pytest.raises(StorageLimitError, match="over 64 KiB"):
        to_storage(entity(Data=b"\0" * 65_537))


def test_more_than_252_properties_are_refused() -> None:
    to_storage(entity(**{f"P{i}": i for i in range(252)}))
    with pytest.raises(StorageLimitError, match="253 properties"):
        to_storage(entity(**{f"P{i}": i for i in range(253)}))


def test_entity_over_one_mib_is_refused() -> None:
    props = {f"T{i}": "y" * 32_000 for i in range(17)}  # 17 * 64,000 bytes > 1 MiB
    with pytest.raises(StorageLimitError, match="Azure allows 1 MiB"):
        to_storage(entity(**props))


def test_large_ints_become_int64_and_overflow_is_refused() -> None:
    stored = to_storage(entity(Small=5, Big=2**40))
    assert stored["Small"] == 5
    assert stored["Big"] == EntityProperty(2**40, EdmType.INT64)
    with pytest.raises(StorageLimitError, match="Int64"):
        to_storage(entity(Huge=2**63))


def test_none_is_dropped_and_naive_datetimes_refused() -> None:
    from datetime import datetime

    assert "Gone" not in to_storage(entity(Gone=None))
    with pytest.raises(StorageLimitError, match="naive datetime"):
        to_storage(entity(At=datetime(2026, 1, 1)))


def test_property_names_must_be_identifiers() -> None:
    with pytest.raises(StorageLimitError, match="not a C# identifier"):
        to_storage(entity(**{"has space": 1}))
