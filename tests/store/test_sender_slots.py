"""The rate limit's slots against Azurite: guarded transactions, an exact sliding window, and
concurrent claimers that never share the last slot."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.cli.azurite import Azurite
from shared.store.account import StorageSettings
from shared.store.keys import SLOT_ROWS, contact_partition
from shared.store.sender_slots import SenderSlots, bucket_of, sender_rows
from shared.store.stores import CONTACTS, RECORDS, Stores

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=60)
SENDER = contact_partition("шторм@example.org")


def slots(stores: Stores, at: datetime, per_sender: int = 3) -> SenderSlots:
    _, rows = sender_rows(stores.table(CONTACTS), SENDER, at, WINDOW)
    return SenderSlots(stores.table(CONTACTS), SENDER, per_sender, WINDOW, at, rows)


def holders(stores: Stores) -> list[datetime]:
    rows = stores.table(CONTACTS).partition(SENDER, row_from=SLOT_ROWS, row_before="s.")
    return sorted(r["At"] for r in rows if r.get("Holder"))


def test_guarded_transaction_writes_all_or_nothing(stores: Stores) -> None:
    table = stores.table(RECORDS)
    etag = table.insert({"PartitionKey": "p", "RowKey": "a", "V": "один"})
    assert etag
    ok = table.transact_if_unchanged(
        [
            ({"PartitionKey": "p", "RowKey": "a", "V": "два"}, etag),
            ({"PartitionKey": "p", "RowKey": "b"}, None),
        ]
    )
    assert ok
    # Stale ETag: nothing of the transaction is written, not even its insert.
    lost = table.transact_if_unchanged(
        [
            ({"PartitionKey": "p", "RowKey": "a", "V": "три"}, etag),
            ({"PartitionKey": "p", "RowKey": "c"}, None),
        ]
    )
    assert not lost
    row = table.get("p", "a")
    assert row is not None and row["V"] == "два"
    assert table.get("p", "c") is None
    # An insert that finds its row: the same.
    fresh = row["_etag"]
    again = table.transact_if_unchanged(
        [
            ({"PartitionKey": "p", "RowKey": "a", "V": "четыре"}, fresh),
            ({"PartitionKey": "p", "RowKey": "b"}, None),
        ]
    )
    assert not again
    row = table.get("p", "a")
    assert row is not None and row["V"] == "два"


def test_the_window_slides_by_arrival_time(stores: Stores) -> None:
    for i in range(3):
        assert slots(stores, NOW + timedelta(minutes=i)).claim(f"m{i}")
    # A fourth within the hour of the first is refused; at the hour's end the first slot frees.
    assert not slots(stores, NOW + timedelta(minutes=59, seconds=59)).claim("m3")
    assert slots(stores, NOW + timedelta(minutes=60)).claim("m4")
    assert not slots(stores, NOW + timedelta(minutes=60, seconds=30)).claim("m5")
    # Old mail (a backfill) is counted in its own window, not in the present one ...
    assert slots(stores, NOW - timedelta(days=30)).claim("old")
    # ... and a mail just before the first three would make four within an hour of them.
    assert not slots(stores, NOW - timedelta(minutes=30)).claim("early")
    assert holders(stores) == [
        NOW - timedelta(days=30),
        NOW,
        NOW + timedelta(minutes=1),
        NOW + timedelta(minutes=2),
        NOW + timedelta(minutes=60),
    ]


def test_a_mail_holding_a_slot_finds_it_again(stores: Stores) -> None:
    assert slots(stores, NOW).claim("same")
    assert slots(stores, NOW).claim("same")  # a redelivered map: the same slot
    assert slots(stores, NOW).claim("other")
    assert slots(stores, NOW).claim("third")
    assert not slots(stores, NOW).claim("fourth")
    assert len(holders(stores)) == 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_sender_under_the_limit_is_never_held_whatever_the_order(
    stores: Stores, seed: int
) -> None:
    """Mail every 10 minutes is 6 in any hour, well under 10: every one is admitted, in
    whatever order the workers claim (a first sync maps old mail shuffled). Slots chosen
    without regard to time could leave a mail's 10 neighbours within the hour on 10 different
    slots, and hold it."""
    times = [NOW - timedelta(days=2) + timedelta(minutes=10 * n) for n in range(150)]
    order = list(range(len(times)))
    random.Random(seed).shuffle(order)
    held = [n for n in order if not slots(stores, times[n], per_sender=10).claim(f"mail-{n}")]
    assert held == []
    assert holders(stores) == times


def test_buckets_do_not_let_a_window_hold_more(stores: Stores) -> None:
    """Mails either side of a bucket boundary, less than a window apart, share the limit."""
    boundary = bucket_of(NOW, WINDOW)
    edge = datetime(2000, 1, 1, tzinfo=UTC) + WINDOW * boundary  # the start of the next bucket
    for i in range(3):
        assert slots(stores, edge - timedelta(minutes=10 - i)).claim(f"before-{i}")
    assert not slots(stores, edge + timedelta(minutes=5)).claim("after")
    assert slots(stores, edge + timedelta(minutes=50)).claim("later")


def test_concurrent_claimers_never_share_the_last_slot(stores: Stores, azurite: Azurite) -> None:
    settings = StorageSettings(connection_string=azurite.connection_string)
    workers = [Stores.connect(settings) for _ in range(4)]

    def claim(n: int) -> bool:
        own = workers[n % len(workers)]
        _, rows = sender_rows(own.table(CONTACTS), SENDER, NOW, WINDOW)
        at = NOW + timedelta(seconds=n % 7)
        return SenderSlots(own.table(CONTACTS), SENDER, 20, WINDOW, at, rows).claim(f"burst-{n}")

    # Four workers, twice as many claimants as slots: enough to race for every slot, the last
    # one included (the storm test in tests/test_rate_limit.py runs the whole pipeline).
    with ThreadPoolExecutor(4) as pool:
        admitted = list(pool.map(claim, range(40)))
    assert admitted.count(True) == 20
    assert len(holders(stores)) == 20


def test_a_new_senders_guest_contact_goes_in_with_its_slot_and_never_overwrites_one(
    stores: Stores,
) -> None:
    """The guest contact a new sender's first mail creates is inserted by the slot claim's own
    transaction (one storage call fewer); a contact written meanwhile by anyone else is kept
    as it is, and the claim still takes its slot."""
    table = stores.table(CONTACTS)
    guest = {"PartitionKey": SENDER, "RowKey": "contact", "Kind": "guest", "Name": "Шторм"}
    first = slots(stores, NOW)
    first.new_contact = guest
    assert first.claim("m1") and first.contact_written
    row = table.get(SENDER, "contact")
    assert row is not None and row["Name"] == "Шторм"
    # Its redelivery sees the contact as its own, and takes no second slot.
    again = slots(stores, NOW)
    again.contact = sender_rows(table, SENDER, NOW, WINDOW)[0]
    assert again.contact_by("m1") and not again.contact_by("m2")
    assert again.claim("m1") and not again.contact_written
    # Another mail read "no contact", but one was set up before its claim: the claim's
    # transaction fails, it reads again and claims its slot without the guest.
    other = contact_partition("другой@example.org")
    late = SenderSlots(table, other, 3, WINDOW, NOW, {})
    late.new_contact = {**guest, "PartitionKey": other}
    table.insert({"PartitionKey": other, "RowKey": "contact", "Kind": "contact", "Name": "Ops"})
    assert late.claim("m3") and not late.contact_written
    kept = table.get(other, "contact")
    assert kept is not None and (kept["Kind"], kept["Name"]) == ("contact", "Ops")
    assert len([r for r in table.partition(other) if r.get("Holder")]) == 1
    assert holders(stores) == [NOW]
