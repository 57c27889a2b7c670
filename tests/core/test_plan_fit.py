"""Cutting text (clip) and filing plans that must fit their queue message (fit_plan)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.clip import ELLIPSIS, clip
from shared.core.contracts import (
    SNIPPET_CHARS,
    AttachmentInfo,
    ContactUpdate,
    FilingPlan,
    RecordRef,
    TimelineEntry,
)
from shared.core.plan_fit import PLAN_JSON_BYTES, PlanTooLarge, fit_plan, plan_bytes

# Cyrillic, CJK, Greek with a combining accent, an emoji with a skin tone, a ZWJ family.
MIXED = "Заявка 请求 α\u0301 👍🏽 👨\u200d👩\u200d👧 "


def test_clip_keeps_short_text_and_cuts_long_text_with_an_ellipsis() -> None:
    assert clip("Привет", 6) == "Привет"
    assert clip("Привет, мир", 7) == "Привет" + ELLIPSIS
    assert clip("anything", 0) == ""


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("ab\u0301c", 3, "a" + ELLIPSIS),  # b and its accent go together
        ("x👍🏽y", 3, "x" + ELLIPSIS),  # the thumb keeps its skin tone or goes
        ("x👨\u200d👩z", 4, "x👨" + ELLIPSIS),  # never ends on a joiner
        ("日本語のテキスト", 4, "日本語" + ELLIPSIS),
        ("a\ud83d\ude00b", 3, "a" + ELLIPSIS),  # a surrogate pair from broken UTF-16
    ],
)
def test_clip_never_cuts_a_character_in_half(text: str, limit: int, expected: str) -> None:
    assert clip(text, limit) == expected


@settings(derandomize=True, database=None, max_examples=300)
@given(st.text(min_size=0, max_size=60), st.integers(min_value=0, max_value=70))
def test_clip_is_a_prefix_within_the_limit(text: str, limit: int) -> None:
    cut = clip(text, limit)
    assert len(cut) <= limit
    if len(text) <= limit:
        assert cut == text
    elif cut:
        kept = cut[: -len(ELLIPSIS)]
        assert cut.endswith(ELLIPSIS) and text.startswith(kept)
        if kept:
            assert not unicodedata.category(text[len(kept)]).startswith("M") or not kept


def _plan(**changes: object) -> FilingPlan:
    entry = TimelineEntry(
        message_key="4142",
        message_id="id@example.com",
        subject="Тема",
        **{"from": "Ёжик <hedgehog@example.com>"},
        to=("support@example.com",),
        snippet="short",
        text="Здравствуйте! " * 20,
        date=datetime(2026, 11, 24, tzinfo=UTC),
        attachments=(AttachmentInfo(filename="отчёт.pdf", content_type="application/pdf", size=9),),
    )
    values: dict[str, object] = {
        "action": "create",
        "message_key": "4142",
        "mailbox": "support",
        "source_id": "src-1",
        "blob": "ab/" + "ab" * 32 + ".eml",
        "record": RecordRef(type="case", key="k" * 64),
        "title": "Тема",
        "entry": entry,
        "reasons": ("route default",),
        "sender": "hedgehog@example.com",
    }
    values.update(changes)
    return FilingPlan.model_validate(values)


def test_a_plan_that_fits_is_left_alone() -> None:
    plan = _plan()
    assert fit_plan(plan) is plan


def test_an_8_mb_title_is_cut_and_the_plan_fits() -> None:
    title = MIXED * (8_000_000 // len(MIXED.encode("utf-8")))
    many = tuple(f"Имя{i} <u{i}@example.com>" for i in range(5_000))
    plan = _plan(
        title=title,
        reasons=(f"subject token in {title}", "x" * 100_000),
        contacts=(ContactUpdate(address="a@example.com", name=title, kind="guest"),),
        participants=tuple(f"u{i}@example.com" for i in range(5_000)),
    )
    assert plan.entry is not None
    entry = plan.entry.model_copy(update={"to": many})
    plan = plan.model_copy(update={"entry": entry})
    assert plan_bytes(plan) > 10_000_000
    fitted = fit_plan(plan)
    assert plan_bytes(fitted) <= PLAN_JSON_BYTES
    # What identifies the mail and its record is whole.
    for name in ("action", "message_key", "mailbox", "source_id", "blob", "record", "sender"):
        assert getattr(fitted, name) == getattr(plan, name)
    assert fitted.title is not None and fitted.title.endswith(ELLIPSIS)
    assert title.startswith(fitted.title[:-1]) and len(fitted.title) <= 1000
    fitted.title.encode("utf-16")  # strict: no half surrogate pair
    assert fitted.contacts[0].name.endswith(ELLIPSIS)
    assert fitted.entry is not None and fitted.entry.to[-1].startswith("... and ")
    assert fitted.entry.text == entry.text  # the reply text was not the problem
    assert len(fitted.entry.snippet) <= SNIPPET_CHARS


def test_a_plan_that_cannot_fit_is_refused() -> None:
    # Nothing a sender wrote is long here: an identifying field is, and is never cut.
    with pytest.raises(PlanTooLarge):
        fit_plan(_plan(source_id="s" * 60_000))
