"""Every key of the filing rows comes from store/keys.py, and stays what it was: rows already in
storage must keep being found.

The expected values below are a regression pin: they were computed once with the code before
the keys moved to store/keys.py (commit a2f79be: `timeline_row` in stages/file.py,
`sighting_row` in services/actions.py, `audit_rows` in services/audit.py, the copy-row hash in
stages/file.py `_put_own_row`), from the same fixed inputs, and written here as literals."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.core.contracts import RecordRef
from shared.core.message import id_key
from shared.store import keys
from shared.store.audit_trail import audit_rows, beside_record
from shared.store.messages import kind_of

KEY = id_key("заявка-17@пример.рф")
AT = datetime(2026, 3, 5, 14, 7, 9, 123456, tzinfo=UTC)
MAILBOX = "поддержка@пример.рф"
SOURCE = "AAMkAGI2-Ω/日本語=="
LONG = "Ω" * 1500  # longer than the 1,000 characters a row keeps of a source id
RECORD = RecordRef(type="case", key="κλειδί-7f3a")


def test_message_key_is_the_hex_of_the_message_id() -> None:
    assert KEY == "d0b7d0b0d18fd0b2d0bad0b02d313740d0bfd180d0b8d0bcd0b5d1802ed180d184"


def test_timeline_rows_keep_their_keys() -> None:
    assert keys.timeline_row(AT, KEY) == "20260305T140709-7d0d435fd786b2223c29be16"
    assert keys.timeline_row(None, KEY) == "0-7d0d435fd786b2223c29be16"
    assert keys.record_partition(RECORD) == "case-κλειδί-7f3a"


def test_sighting_action_and_copy_rows_keep_their_keys() -> None:
    assert keys.sighting_row(MAILBOX, SOURCE) == "s-f66c6a83816f0decb95f44a406f1c24a"
    assert keys.sighting_row(MAILBOX, LONG) == "s-4cc19c6acb9cad6bb2f6e07773504238"
    assert (
        keys.action_row(MAILBOX, SOURCE, "move", 0) == "s-f66c6a83816f0decb95f44a406f1c24a-move-0"
    )
    # A further copy's row hashes the whole source id, not the 1,000 characters kept of it.
    assert keys.copy_row("hold", MAILBOX, SOURCE, "raw/ab") == "hold-f093736de2cd870d677acad9"
    assert keys.copy_row("drop", MAILBOX, LONG, "raw/ab") == "drop-63e058c4b8286c5c1332191a"
    assert keys.ingested_row(MAILBOX, SOURCE) == "i-f66c6a83816f0decb95f44a406f1c24a"
    assert keys.filed_row("case", primary=True) == "msg"
    assert keys.filed_row("case", primary=False) == "also-case"


def test_audit_rows_keep_their_keys() -> None:
    day, on_record = audit_rows(
        "mailfiler", "pipeline", "create", RECORD, "from x: шаг", AT, once=KEY
    )
    assert on_record is not None
    assert (day["PartitionKey"], day["RowKey"]) == (
        "day-20260305",
        "20260305T140709123456-53b1a5485ae8",
    )
    assert on_record["RowKey"] == "~audit-20260305T140709123456-53b1a5485ae8"
    assert on_record["PartitionKey"] == keys.record_partition(RECORD)
    # A creation's day row kept beside its record (table Records): the day's RowKey after
    # "~audit-", so a day is one RowKey range of a type's partition.
    beside = beside_record(day, RECORD)
    assert (beside["PartitionKey"], beside["RowKey"]) == (
        "case",
        "~audit-20260305T140709123456-53b1a5485ae8",
    )
    assert beside["RowKey"].startswith(keys.record_audit_day(AT))
    day, on_record = audit_rows("Ярослава", "api", "update", RECORD, '{"Статус": "closed"}', AT)
    assert on_record is not None
    assert day["RowKey"] == "20260305T140709123456-4e8791fc8f28"
    assert on_record["RowKey"] == "~audit-20260305T140709123456-4e8791fc8f28"
    # Without a record, only the day's row.
    assert audit_rows("Ярослава", "cli", "export", None, "всё", AT)[1] is None


def test_contact_conversation_number_and_source_keys_keep_their_keys() -> None:
    assert keys.contact_partition("Ярослава@Пример.рф") == "354b854a20adb2cc532b3072028164fb"
    assert keys.participant_row("Ярослава@Пример.рф") == (
        "~p-d18fd180d0bed181d0bbd0b0d0b2d0b040d0bfd180d0b8d0bcd0b5d1802ed180d184"
    )
    assert keys.conversation_row("AAQkADAw-会話") == "b52eea9b219316d04d22eef644a139e2"
    assert keys.number_row(12) == "n-999999999988"
    assert keys.number_of_row(keys.number_row(12)) == 12
    assert keys.source_key(SOURCE) == "619b290ed07f0ada56c4ca58df650161d94c0a59"


def test_message_rows_sort_into_their_kinds() -> None:
    kinds = {
        "msg": "filed",
        "also-case": "also",
        "drop": "unfiled",
        "hold-f093736de2cd870d677acad9": "unfiled",
        keys.ingested_row(MAILBOX, SOURCE): "ingested",
        "claim": "claim",
        keys.sighting_row(MAILBOX, SOURCE): "sighting",
        "zzz": "other",
    }
    assert {row: kind_of(row) for row in kinds} == kinds
