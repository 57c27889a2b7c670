"""Keys of the outbound, notice, retention and event-link rows, moved into store/keys.py, stay
byte-identical: rows already in storage must still be found.

Every expected value below was computed with the code before the move (outbound's
`_recipient_partition` and `short_hash(mail_id, length=12)`, calendar_links' `_link_partition`
and `short_hash(event_id)`, retention's `f"{due:%Y%m%d}"`, the notices' `f"{i}-{kind}"`), not
with the functions under test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.store.keys import (
    due_day,
    event_link_partition,
    event_link_row,
    notice_row,
    recipient_partition,
    slot_tag,
)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (" Ålice@Bücher.Example ", "r-20049326352eb4e51d800c257a36affd"),
        ("иван@пример.рф", "r-cb4b36bdf051246cea8fccee1fc96b91"),
        ("王伟@例子.中国", "r-8cc87a41a7344b9fd11f341b68897fda"),
    ],
)
def test_recipient_partition_is_unchanged(address: str, expected: str) -> None:
    assert recipient_partition(address) == expected


def test_recipient_partition_ignores_case_and_outer_space() -> None:
    assert recipient_partition("  ИВАН@пример.РФ\t") == recipient_partition("иван@пример.рф")


@pytest.mark.parametrize(
    ("mail_id", "expected"), [("mail-1", "7351e9b97cd1"), ("письмо-7", "1de4ae03f174")]
)
def test_slot_tag_is_unchanged(mail_id: str, expected: str) -> None:
    assert slot_tag(mail_id) == expected


@pytest.mark.parametrize(
    ("event_id", "expected"),
    [
        ("AAMkAGI2TG93AAA=/事件", "eecb2fafe81b66322f19e9183661d062"),
        ("событие-42", "dffe533587e825c9af5fd99ea97c43c9"),
    ],
)
def test_event_link_keys_are_unchanged(event_id: str, expected: str) -> None:
    assert event_link_row(event_id) == expected
    assert event_link_partition("受付") == "evlink-受付"


def test_notice_row_and_due_day_are_unchanged() -> None:
    assert notice_row(0, "acknowledge") == "0-acknowledge"
    assert notice_row(12, "forward") == "12-forward"
    # The day as the datetime tells it (its own offset), as before.
    late = datetime(2026, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=5)))
    assert due_day(late) == "20261231"
    assert due_day(datetime(2027, 1, 2, tzinfo=UTC)) == "20270102"
