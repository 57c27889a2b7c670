"""The per-sender rate limit under bursts (issue 16, point 5): real ingest, map and file stages on
one Azurite, four workers in threads, each with storage clients of its own (as separate
processes would have). Every mail is accounted for: filed or held, never lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.core.config import Config, parse_config
from shared.core.message import id_key
from shared.services.audit import Actor
from shared.services.ingest import queue_message
from shared.services.records import file_manually, resolve
from shared.sources.base import MailboxSource, SourceMessage
from shared.sources.registry import open_source
from shared.stages.file import file_plan
from shared.stages.map import map_queued
from shared.store.account import StorageSettings
from shared.store.keys import SLOT_ROWS, contact_partition
from shared.store.sender_slots import keep_for, prune_slots
from shared.store.stores import (
    CONTACTS,
    FILING,
    HELD,
    INBOUND,
    MESSAGES,
    NOTICES,
    QUEUES,
    Stores,
    poison,
)

from .helpers import records

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
STORM = "storm@example.org"
CONFIG = """
record_types: [{name: case, prefix: CASE}]
mailboxes:
  - {name: support, kind: local, path: "FOLDER", record_type: case,
     addresses: [support@example.com]}
routes:
  - {name: all, record_type: case, acknowledge: true}
rate_limit: {per_sender: PER_SENDER, window_minutes: WINDOW, allow: ['@partner.example']}
"""


def make_config(tmp_path: Path, per_sender: int = 20, window: int = 120) -> Config:
    folder = tmp_path / "mail"
    folder.mkdir(exist_ok=True)
    return parse_config(
        CONFIG.replace("FOLDER", str(folder))
        .replace("PER_SENDER", str(per_sender))
        .replace("WINDOW", str(window))
    )


def mail(sender: str, n: int, date: datetime = NOW) -> bytes:
    """A new conversation in Cyrillic and Chinese, one Message-ID per (sender, n)."""
    message = EmailMessage()
    message["From"] = f"Дмитрий Шторм 风暴 <{sender}>"
    message["To"] = "support@example.com"
    message["Subject"] = f"Заказ №{n}: 打印机坏了"
    message["Message-ID"] = message_id(sender, n)
    message["Date"] = date.strftime("%a, %d %b %Y %H:%M:%S +0000")
    message.set_content(f"Принтер не работает ({n}). 打印机坏了。")
    return message.as_bytes(policy=SMTP)


def message_id(sender: str, n: int) -> str:
    return f"<{sender.replace('@', '.')}-{n}@mx.example.net>"


def key_of(sender: str, n: int) -> str:
    return id_key(message_id(sender, n).strip("<>"))


def ingest(stores: Stores, batch: Iterable[tuple[str, int, datetime, datetime]]) -> None:
    """(sender, n, arrival as the source reports it, the Date header) into `inbound`."""
    for sender, n, arrival, date in batch:
        queue_message(
            stores,
            "support",
            SourceMessage(
                source_id=f"{sender}/{n}", raw=mail(sender, n, date), received_at=arrival
            ),
            NOW,
        )


def run_workers(azurite: Azurite, config: Config, tmp_path: Path, workers: int = 4) -> Counter[str]:
    """Map and file until both queues are empty; what each queue's messages were."""
    settings = StorageSettings(connection_string=azurite.connection_string)

    def work() -> Counter[str]:
        stores = Stores.connect(settings)

        def source_for(name: str) -> MailboxSource:
            return open_source(config, name, tmp_path, stores)

        done: Counter[str] = Counter()
        while True:
            got = 0
            for queue in (INBOUND, FILING):
                for message in stores.queues.receive(queue, max_messages=4, visibility_timeout=120):
                    if queue == INBOUND:
                        map_queued(stores, config, message.body, now=NOW)
                    else:
                        plan = file_plan(
                            stores, config, message.body, now=NOW, source_for=source_for
                        )
                        done[plan.action] += 1
                    stores.queues.delete(queue, message)
                    got += 1
            if not got and not stores.queues.depth(INBOUND) and not stores.queues.depth(FILING):
                return done

    with ThreadPoolExecutor(workers) as pool:
        results = [pool.submit(work) for _ in range(workers)]
        return sum((f.result() for f in results), Counter())


def outcome(stores: Stores, sender: str, count: int) -> Counter[str]:
    """Per message of `sender`: filed or held (exactly one of them each)."""
    seen: Counter[str] = Counter()
    for n in range(count):
        rows = {r["RowKey"] for r in stores.table(MESSAGES).partition(key_of(sender, n))}
        status = {"msg", "hold"} & rows
        assert len(status) == 1, f"message {n} of {sender}: {sorted(rows)}"
        seen[status.pop()] += 1
    return seen


def no_poison(stores: Stores) -> None:
    for queue in QUEUES:
        assert not stores.queues.peek(poison(queue)), f"{queue}-poison is not empty"
    assert not stores.queues.depth(INBOUND) and not stores.queues.depth(FILING)


def slot_holders(stores: Stores, sender: str) -> int:
    rows = stores.table(CONTACTS).partition(
        contact_partition(sender), row_from=SLOT_ROWS, row_before="s."
    )
    return sum(1 for r in rows if r.get("Holder"))


def test_a_storm_of_200_through_four_workers_opens_exactly_per_sender_records(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    config = make_config(tmp_path)
    # Received within a few minutes; the Date headers (the sender's to write) spread the storm
    # over 200 days, which must not matter.
    ingest(
        stores,
        ((STORM, n, NOW - timedelta(seconds=n), NOW - timedelta(days=n)) for n in range(200)),
    )
    done = run_workers(azurite, config, tmp_path)
    no_poison(stores)
    assert done == Counter(create=20, hold=180)
    assert outcome(stores, STORM, 200) == Counter(msg=20, hold=180)
    assert len([r for r in records(stores) if r.get("Contact") == STORM]) == 20
    held = list(stores.table(HELD).partition("support"))
    assert len(held) == 180 and all(h["Sender"] == STORM for h in held)
    assert all("(limit 20): held" in h["Reasons"] for h in held)
    assert slot_holders(stores, STORM) == 20
    # Acknowledgements went to the admitted mail only.
    assert len(list(stores.table(NOTICES).all())) == 20


def test_a_mixed_batch_leaves_other_senders_and_the_allow_list_alone(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    config = make_config(tmp_path, per_sender=10)
    others = [f"kunde{i}@beispiel.de" for i in range(8)]
    partner = "alerts@partner.example"
    batch = []
    for n in range(60):  # the storm, interleaved with everyone else's mail
        batch.append((STORM, n, NOW - timedelta(seconds=n), NOW))
        if n % 2 == 0:
            batch.append((others[n // 2 % 8], n // 16, NOW - timedelta(seconds=n), NOW))
        if n % 3 == 0:
            batch.append((partner, n // 3, NOW - timedelta(seconds=n), NOW))
    ingest(stores, batch)
    run_workers(azurite, config, tmp_path)
    no_poison(stores)
    assert outcome(stores, STORM, 60) == Counter(msg=10, hold=50)
    for other in others:  # 30 mails among 8 senders: 3 or 4 each, under the limit
        sent = sum(1 for s, *_ in batch if s == other)
        assert outcome(stores, other, sent) == Counter(msg=sent)
    assert outcome(stores, partner, 20) == Counter(msg=20)  # allow-listed: twice the limit
    assert slot_holders(stores, partner) == 0
    assert {h["Sender"] for h in stores.table(HELD).all()} == {STORM}


def test_a_backfill_of_old_mail_is_not_throttled_while_a_live_storm_is(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    """Counted by arrival time: 40 mails that arrived half an hour apart a month ago are within
    the limit in their own windows; 25 arriving now are not."""
    config = make_config(tmp_path, per_sender=5, window=60)
    month_ago = NOW - timedelta(days=30)
    batch = [(STORM, n, month_ago + timedelta(minutes=30 * n), NOW) for n in range(40)]
    batch += [(STORM, 100 + n, NOW - timedelta(seconds=n), NOW) for n in range(25)]
    batch.sort(key=lambda m: m[1] % 7)  # old and live interleaved
    ingest(stores, batch)
    run_workers(azurite, config, tmp_path)
    no_poison(stores)
    assert outcome(stores, STORM, 40) == Counter(msg=40)
    live = Counter(
        "msg" if stores.table(MESSAGES).get(key_of(STORM, 100 + n), "msg") else "hold"
        for n in range(25)
    )
    assert live == Counter(msg=5, hold=20)


def test_a_first_sync_of_300_mails_of_one_sender_files_them_all_and_a_live_storm_is_held(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    """Issue 22, goal 5: the default limit (20 a sender in 120 minutes) counts mail by its
    arrival, not by when it is filed. A first sync files a busy sender's 300 mails at once, 12
    of them in any two hours of arrival (every 10 minutes over two days): all are filed as
    records of their own. Then a storm from the same sender arrives now: the limit holds all but
    20 of it."""
    config = make_config(tmp_path)
    assert (config.rate_limit.per_sender, config.rate_limit.window_minutes) == (20, 120)
    start = NOW - timedelta(days=3)
    ingest(stores, [(STORM, n, start + timedelta(minutes=10 * n), NOW) for n in range(300)])
    done = run_workers(azurite, config, tmp_path)
    no_poison(stores)
    assert done == Counter(create=300)
    assert outcome(stores, STORM, 300) == Counter(msg=300)
    assert len(records(stores)) == 300
    assert not list(stores.table(HELD).all())  # nothing of the backfill waits for release
    live = [(STORM, 1000 + n, NOW - timedelta(seconds=n), NOW) for n in range(30)]
    ingest(stores, live)
    done = run_workers(azurite, config, tmp_path)
    no_poison(stores)
    assert done == Counter(create=20, hold=10)
    storm = Counter(
        "msg" if stores.table(MESSAGES).get(key_of(STORM, 1000 + n), "msg") else "hold"
        for n in range(30)
    )
    assert storm == Counter(msg=20, hold=10)
    assert len(records(stores)) == 320


def test_redelivery_takes_no_second_slot_and_a_held_mail_can_still_be_released(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    config = make_config(tmp_path, per_sender=3)
    ingest(stores, [(STORM, 0, NOW, NOW)])
    (first,) = stores.queues.receive(INBOUND, max_messages=1, visibility_timeout=120)
    # The map stage runs twice for one mail (a worker died before deleting its message), and the
    # filing plan is delivered twice: one slot, one record.
    plans = map_queued(stores, config, first.body, now=NOW)
    # The same plans, but for the claim the first delivery won (its filing leaves it out).
    redelivered = map_queued(stores, config, first.body, now=NOW)
    assert redelivered == [p.model_copy(update={"claimed": False}) for p in plans]
    assert [p.claimed for p in plans] == [True]
    stores.queues.delete(INBOUND, first)
    assert slot_holders(stores, STORM) == 1
    run_workers(azurite, config, tmp_path)
    for n in (1, 2, 3):
        ingest(stores, [(STORM, n, NOW - timedelta(minutes=n), NOW)])
        run_workers(azurite, config, tmp_path)
    no_poison(stores)
    assert outcome(stores, STORM, 4) == Counter(msg=3, hold=1)
    assert stores.table(MESSAGES).get(key_of(STORM, 3), "hold") is not None
    assert slot_holders(stores, STORM) == 3
    # Releasing held mail works as before: an operator files it onto a record by its Message-ID.
    record = resolve(stores, config, "case", "CASE-1")
    file_manually(
        stores, config, record, {"message_id": message_id(STORM, 3)}, Actor("ops", "api"), NOW
    )
    run_workers(azurite, config, tmp_path)
    filed = stores.table(MESSAGES).get(key_of(STORM, 3), "msg")
    assert filed is not None and filed["RecordKey"] == record["RowKey"]
    # Its claim beside it, though the map stage never claimed it (it was held): a later copy's
    # claim insert loses, so the map stage reads the index and records a sighting.
    claim = stores.table(MESSAGES).get(key_of(STORM, 3), "claim")
    assert claim is not None and claim["RecordKey"] == record["RowKey"]
    ingest(stores, [(STORM, 3, NOW, NOW)])  # the same mail polled again
    (again,) = stores.queues.receive(INBOUND, max_messages=1, visibility_timeout=60)
    assert [p.action for p in map_queued(stores, config, again.body, now=NOW)] == ["sighting"]
    stores.queues.delete(INBOUND, again)
    assert slot_holders(stores, STORM) == 3  # a release takes no slot


def test_slot_rows_nobody_wrote_for_two_windows_are_pruned_and_the_rest_kept(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    """Slot rows only grow the Contacts table once no claim can read them: the daily sweep
    deletes those the service has not seen written for two windows (at least two days), and
    keeps contacts and fresh slots."""
    config = make_config(tmp_path, per_sender=3, window=60)
    ingest(stores, [(STORM, n, NOW, NOW) for n in range(2)])
    run_workers(azurite, config, tmp_path)
    contacts = stores.table(CONTACTS)
    partition = contact_partition(STORM)
    slots = [r for r in contacts.partition(partition) if r["RowKey"].startswith(SLOT_ROWS)]
    assert len(slots) >= 2 and slot_holders(stores, STORM) == 2
    real_now = datetime.now(UTC)  # the service stamps rows with its own clock
    window = timedelta(minutes=60)
    assert prune_slots(contacts, real_now, window) == 0  # written just now: kept
    assert keep_for(window) == timedelta(days=2) and keep_for(timedelta(days=3)) == timedelta(6)
    assert prune_slots(contacts, real_now + timedelta(days=2, minutes=1), window) == len(slots)
    left = [r["RowKey"] for r in contacts.partition(partition)]
    assert left and not [k for k in left if k.startswith(SLOT_ROWS)]  # the contact row stays
