"""The repositories of the outbound stage's rows against Azurite: a recipient's slots (two
limits, ETag-guarded, never over the limit with concurrent workers, one slot per mail), and
the Outbox and Notices rows where the stage and operators look for them."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.core.contracts import FilingPlan, Notice, OutboundMail, RecordRef
from shared.core.outbound import Limits
from shared.store import notices, outbox
from shared.store.account import RequestCounter
from shared.store.keys import notice_row, recipient_partition, slot_tag
from shared.store.stores import NOTICES, OUTBOX, Stores

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
TO = "Дарья@пример.рф"
LIMITS = Limits(window_minutes=60, per_window=3, per_day=5)


def stored_slots(stores: Stores, address: str) -> dict[str, int]:
    row = stores.table(OUTBOX).get(recipient_partition(address), outbox.SLOTS)
    assert row is not None
    found: dict[str, int] = json.loads(row["Slots"])
    return found


def test_a_slot_costs_one_read_and_one_write_and_a_redelivery_takes_no_other(
    stores: Stores, counter: RequestCounter
) -> None:
    table = stores.table(OUTBOX)
    assert outbox.reserve(table, TO, "письмо-1", NOW, LIMITS) is None
    assert counter.total == 2  # the read, then the insert
    assert outbox.reserve(table, TO.upper(), "письмо-1", NOW, LIMITS) is None
    assert stored_slots(stores, TO) == {slot_tag("письмо-1"): int(NOW.timestamp())}


def test_both_limits_refuse_and_a_released_slot_is_free_again(stores: Stores) -> None:
    table = stores.table(OUTBOX)
    for i in range(3):
        assert outbox.reserve(table, TO, f"m{i}", NOW + timedelta(minutes=i), LIMITS) is None
    why = outbox.reserve(table, TO, "m3", NOW + timedelta(minutes=5), LIMITS)
    assert why == "3 automatic mails in 60 minutes (limit)"
    outbox.release(table, [TO], "m2", NOW)
    assert slot_tag("m2") not in stored_slots(stores, TO)
    assert outbox.reserve(table, TO, "m3", NOW + timedelta(minutes=5), LIMITS) is None
    # Two more windows later: the window is free, the day is not.
    later = NOW + timedelta(hours=2)
    assert outbox.reserve(table, TO, "m4", later, LIMITS) is None
    assert outbox.reserve(table, TO, "m5", later, LIMITS) is None
    assert outbox.reserve(table, TO, "m6", later, LIMITS) == "5 automatic mails in a day (limit)"


def test_concurrent_workers_never_take_more_than_the_limit(stores: Stores) -> None:
    table = stores.table(OUTBOX)

    def take(i: int) -> str | None:
        return outbox.reserve(table, "王芳@例子.中国", f"mail-{i}", NOW, LIMITS)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(take, range(8)))
    assert answers.count(None) == LIMITS.per_window
    assert len(stored_slots(stores, "王芳@例子.中国")) == LIMITS.per_window


def test_outbox_and_notice_rows_are_where_they_are_looked_for(stores: Stores) -> None:
    record = RecordRef(type="case", key="k1")
    mail = OutboundMail(
        id="msgkey-0", kind="acknowledge", mailbox="поддержка", to=(TO,), record=record
    )
    plan = FilingPlan(
        action="create",
        message_key="msgkey",
        mailbox="поддержка",
        source_id="1",
        blob="raw/x",
        record=record,
        notices=(Notice(kind="acknowledge", to=TO, reason="новое обращение"),),
    )
    notices.record(stores.table(NOTICES), plan, NOW)
    outbox.note_sent(stores.table(OUTBOX), mail, NOW, message_id="<a@b>", answer="250 ok")
    row = outbox.sent(stores.table(OUTBOX), mail.id)
    assert row is not None
    assert (row["Recorded"], row["To"], row["RecordKey"]) == (False, TO, "k1")
    outbox.recorded(stores.table(OUTBOX), mail.id)
    notices.sent(stores.table(NOTICES), "msgkey", notice_row(0, "acknowledge"), NOW, "<a@b>")
    assert stores.table(OUTBOX).get("sent", mail.id)["Recorded"] is True  # type: ignore[index]
    (notice,) = stores.table(NOTICES).partition("msgkey")
    assert notice["RowKey"] == "0-acknowledge"
    assert (notice["Sent"], notice["SentMessageId"], notice["Reason"]) == (
        True,
        "<a@b>",
        "новое обращение",
    )
    outbox.note_refused(stores.table(OUTBOX), mail, NOW, "no")
    (refused,) = stores.table(OUTBOX).partition("refused")
    assert (refused["RowKey"], refused["Reason"]) == (mail.id, "no")
