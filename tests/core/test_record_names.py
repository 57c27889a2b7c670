"""Reasons name records as people do: CASE-12, not a type and a 32-digit key."""

from __future__ import annotations

from shared.core.contracts import RecordRef
from shared.core.decide import record_key
from shared.core.record_names import name_records

KEY = record_key("case", "root@example.org")
OTHER = record_key("дело", "other@example.org")


def test_known_records_are_named_and_others_left_as_they_are() -> None:
    numbers = {RecordRef(type="case", key=KEY): "CASE-12"}
    text = f"In-Reply-To <a@b> is filed on case {KEY}; case {OTHER} and ticket {KEY} are not"
    assert name_records(text, numbers.get) == (
        f"In-Reply-To <a@b> is filed on CASE-12; case {OTHER} and ticket {KEY} are not"
    )
    # Not a key: a word and 32 hex digits inside a longer token, or fewer digits.
    for text in (f"case {KEY}0", f"case x{KEY}", f"case {KEY[:31]}", "Счёт №7"):
        assert name_records(text, numbers.get) == text
