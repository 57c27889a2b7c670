"""Issue 22: fewer storage calls per filed mail, every mail still filed once.

Small raw mail rides in its `inbound` message (no Blob Storage read in map); the map
invocation files its plans itself, and a plan whose filing fails there goes to the `filing`
queue and is filed by the file stage as before. Against Azurite, counted by its requests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import UpdateMode

from shared.core.config import Config, parse_config
from shared.core.contracts import INLINE_RAW_BYTES, FilingPlan, InboundMessage, RecordRef
from shared.core.message import id_key
from shared.services.audit import day_trail, record_trail
from shared.services.inbound import inbound_mails
from shared.services.ingest import ingest_mailbox, queue_message
from shared.sources.base import SourceMessage
from shared.sources.local import LocalSource
from shared.stages.file import file_plan
from shared.stages.map import map_queued
from shared.store import conversations, messages, records
from shared.store.account import RequestCounter
from shared.store.audit_trail import audit_rows, write_day
from shared.store.blobs import RAW_CONTAINER
from shared.store.claims_fill import claims_complete
from shared.store.keys import INDEX_ROWS, SIGHTING_ROWS, after_prefix, audit_day
from shared.store.queues import decode, encode
from shared.store.stores import AUDIT, FILING, INBOUND, MESSAGES, RECORDS, Stores

from . import helpers
from .helpers import timeline_entries

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def counter() -> RequestCounter:
    """The `stores` fixture's counter, recording each call (conftest.py)."""
    return RequestCounter(record=True)


def config_for(folder: Path) -> Config:
    return parse_config(
        "record_types: [{name: case, prefix: CASE}]\n"
        f"mailboxes: [{{name: support, kind: local, path: '{folder}', record_type: case}}]\n"
    )


def write(
    folder: Path, name: str, mid: str, subject: str, body: str, reply_to: str | None = None
) -> bytes:
    thread = f"In-Reply-To: <{reply_to}>\nReferences: <{reply_to}>\n" if reply_to else ""
    raw = (
        "From: =?utf-8?b?5p2O6Zu3?= <li.lei@example.cn>\nTo: support@mailfiler.example\n"
        f"Subject: {subject}\nDate: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <{mid}>\n"
        f"{thread}MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        f"Content-Transfer-Encoding: 8bit\n\n{body}\n"
    ).encode()
    (folder / name).write_bytes(raw)
    return raw


def ingested(stores: Stores, folder: Path) -> list[InboundMessage]:
    ingest_mailbox(stores, "support", LocalSource(folder), now=NOW)
    return [m for body in stores.queues.peek(INBOUND, 32) for m in inbound_mails(body)]


def map_and_file(
    stores: Stores, config: Config, file: Callable[[bytes, datetime], object] | None
) -> None:
    """Map every visible inbound message, as the `inbound` trigger does (functions/pipeline.py)."""
    for message in stores.queues.receive(INBOUND, max_messages=32, visibility_timeout=60):
        map_queued(stores, config, message.body, now=NOW, file=file)
        stores.queues.delete(INBOUND, message)


def filer(stores: Stores, config: Config) -> Callable[[bytes, datetime], object]:
    return lambda body, at: file_plan(stores, config, body, now=at)


def test_small_mail_travels_inline_and_is_filed_without_reading_its_blob(
    stores: Stores, counter: RequestCounter, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    raw = write(tmp_path, "1.eml", "root@example.cn", "打印机卡纸", "三楼的打印机又卡纸了。")
    (inbound,) = ingested(stores, tmp_path)
    assert inbound.raw == raw
    assert stores.blobs.get(inbound.blob) == raw  # the record's raw mail is stored all the same
    # The process's one look at the claims marker (store/claims_fill.py: fresh storage writes
    # it), taken before counting: once per process, not per mail.
    assert claims_complete(stores)
    counter.reset()
    map_and_file(stores, config, filer(stores, config))
    assert counter.calls is not None
    calls = list(counter.calls)
    assert not [p for _, m, p in calls if m == "GET" and f"/{RAW_CONTAINER}/" in f"/{p}"]
    # Filed in the map invocation: nothing went through the `filing` queue.
    assert not [p for _, m, p in calls if p.endswith(f"/{FILING}/messages")]
    assert not stores.queues.depth(FILING)
    row = messages.filed(stores, id_key("root@example.cn"))
    assert row is not None and row["Blob"] == inbound.blob
    (entry,) = timeline_entries(stores)
    assert entry["Subject"] == "打印机卡纸" and "三楼的打印机" in entry["Text"]
    # A new record: 10 calls from receiving the inbound message to deleting it, filed (16
    # before: the blob read, the filing send, the file stage's receive and delete; 12 before a
    # won claim answered dedupe; 11 before the creation's day audit row rode in the record's
    # transaction). One of them is the process's first look at the highest record number
    # (store/numbers.py).
    assert len(calls) <= 10


def test_big_mail_is_read_from_blob_storage(stores: Stores, tmp_path: Path) -> None:
    config = config_for(tmp_path)
    body = "Ο εκτυπωτής στον τρίτο όροφο μπλοκάρει ξανά. " * 600  # over INLINE_RAW_BYTES
    raw = write(tmp_path, "1.eml", "big@example.gr", "Εκτυπωτής", body)
    assert len(raw) > INLINE_RAW_BYTES
    (inbound,) = ingested(stores, tmp_path)
    assert inbound.raw is None
    map_and_file(stores, config, filer(stores, config))
    (entry,) = timeline_entries(stores)
    assert entry["Subject"] == "Εκτυπωτής"
    assert messages.filed(stores, id_key("big@example.gr")) is not None


def test_a_plan_whose_filing_fails_in_map_is_filed_from_the_filing_queue_once(
    stores: Stores, tmp_path: Path
) -> None:
    config = config_for(tmp_path)
    write(tmp_path, "1.eml", "root@example.ua", "Принтер", "Принтер на третьому поверсі.")
    write(tmp_path, "2.eml", "reply@example.ua", "Re: Принтер", "Знову.", "root@example.ua")
    ingested(stores, tmp_path)
    tried: list[bytes] = []

    def refused(body: bytes, at: datetime) -> object:
        tried.append(body)
        raise ServiceRequestError("connection refused")

    map_and_file(stores, config, refused)
    # The root was tried at once and queued for retry; the reply waits for its parent.
    assert len(tried) == 1
    assert stores.queues.depth(FILING) == 1
    assert messages.filed(stores, id_key("root@example.ua")) is None
    (queued,) = stores.queues.receive(FILING, max_messages=1, visibility_timeout=60)
    assert queued.body == tried[0]
    file_plan(stores, config, queued.body, now=NOW)
    stores.queues.delete(FILING, queued)
    # The waiting reply (visible again after its delay) attaches to the root's record.
    deadline = datetime.now(UTC).timestamp() + 15
    while messages.filed(stores, id_key("reply@example.ua")) is None:
        assert datetime.now(UTC).timestamp() < deadline, "the reply was never filed"
        map_and_file(stores, config, filer(stores, config))
    root = messages.filed(stores, id_key("root@example.ua"))
    reply = messages.filed(stores, id_key("reply@example.ua"))
    assert root is not None and reply is not None
    assert reply["RecordKey"] == root["RecordKey"]
    assert sorted(e["Subject"] for e in timeline_entries(stores)) == ["Re: Принтер", "Принтер"]
    assert not stores.queues.depth(FILING)


def test_a_long_folder_name_leaves_the_raw_mail_in_blob_storage_only(
    stores: Stores, tmp_path: Path
) -> None:
    """Inline raw mail never pushes an inbound message over the queue's 64 KiB: a source's
    folder name is the source's to choose (here 20,000 Cyrillic letters, 40 KB of JSON)."""
    config = config_for(tmp_path)
    body = "Письмо в длинной папке. " * 400  # 18 KB: small enough to go inline alone
    raw = write(tmp_path, "1.eml", "folder@example.ru", "Папка", body)
    assert 16 * 1024 < len(raw) <= INLINE_RAW_BYTES
    for source_id, folder in (("short", "Входящие"), ("long", "Ф" * 20_000)):
        queue_message(stores, "support", SourceMessage(source_id, raw, folder=folder), NOW)
    inbound = {
        m.source_id: m for m in (decode(b, InboundMessage) for b in stores.queues.peek(INBOUND))
    }
    assert inbound["short"].raw == raw
    assert inbound["long"].raw is None and inbound["long"].folder == "Ф" * 20_000
    map_and_file(stores, config, filer(stores, config))
    row = messages.filed(stores, id_key("folder@example.ru"))
    assert row is not None
    assert stores.blobs.get(row["Blob"]) == raw


def test_a_new_record_s_creation_is_audited_in_the_record_s_own_transaction(
    stores: Stores, counter: RequestCounter, tmp_path: Path
) -> None:
    """The day's audit row of a creation rides in the record's insert (table Records, beside
    the record): no write to table Audit, and the day's trail still shows it, once."""
    config = config_for(tmp_path)
    write(tmp_path, "1.eml", "audit@example.pl", "Drukarka", "Drukarka znowu się zacięła.")
    ingested(stores, tmp_path)
    counter.reset()
    map_and_file(stores, config, filer(stores, config))
    assert counter.calls is not None
    assert not [p for _, _, p in counter.calls if "/Audit" in f"/{p}"]
    (record,) = helpers.records(stores)
    assert list(stores.table(AUDIT).partition(audit_day(NOW))) == []
    (act,) = day_trail(stores, NOW, ["case", "case"])
    assert (act["Action"], act["RecordType"], act["RecordKey"]) == (
        "create",
        "case",
        record["RowKey"],
    )
    assert act["Actor"] == "mailfiler" and act["Detail"].startswith("from support: ")
    assert act["PartitionKey"] == audit_day(NOW)  # as the Audit table keeps it
    assert list(day_trail(stores, NOW)) == []  # rows beside records only for the types asked
    # Readers of records and of the index do not see the row.
    ref = RecordRef(type="case", key=record["RowKey"])
    listed = records.newest(
        stores, "case", after=None, status=None, contact=None, mailbox=None, limit=10
    )
    assert [r["RecordKey"] for r in listed] == [ref.key]
    assert [a["Action"] for a in record_trail(stores, ref)] == ["create"]


def test_a_creation_by_an_older_build_is_audited_once_when_its_plan_is_filed_again(
    stores: Stores, tmp_path: Path
) -> None:
    """An older build created the record, then wrote the day's row to table Audit, and stopped
    (one mail) or stopped before the day's row (the other): filing the plan again keeps or
    writes that row, and the day's trail shows each creation once."""
    config = config_for(tmp_path)
    write(tmp_path, "1.eml", "old-1@example.pl", "Skaner", "Skaner nie działa.")
    write(tmp_path, "2.eml", "old-2@example.pl", "Ploter", "Ploter nie działa.")
    ingested(stores, tmp_path)
    map_and_file(stores, config, None)  # both plans wait on the filing queue
    queued = stores.queues.receive(FILING, max_messages=2, visibility_timeout=60)
    assert len(queued) == 2
    for index, message in enumerate(queued):
        plan = decode(message.body, FilingPlan)
        assert plan.record is not None
        columns = {
            "Title": plan.title,
            "Status": "new",
            "CreatedAt": NOW,
            "CreatedFrom": plan.message_key,
            "Mailbox": plan.mailbox,
            "Contact": plan.sender,
        }
        # As the older build created it: no row beside the record.
        number, _ = records.create(stores, plan.record, "CASE", columns)
        assert number is not None
        if index == 0:
            day, _ = audit_rows(
                "mailfiler",
                "pipeline",
                "create",
                plan.record,
                f"from {plan.mailbox}: " + "; ".join(plan.reasons)[:1500],
                NOW,
                once=plan.message_key,
            )
            write_day(stores, day)
    for message in queued:
        file_plan(stores, config, message.body, now=NOW)
    acts = list(day_trail(stores, NOW, ["case"]))
    assert sorted(a["RecordKey"] for a in acts if a["Action"] == "create") == sorted(
        r["RowKey"] for r in helpers.records(stores)
    )
    assert len(acts) == 2
    for key in ("old-1@example.pl", "old-2@example.pl"):
        assert messages.filed(stores, id_key(key)) is not None


@pytest.mark.parametrize("older_build", [False, True])
def test_a_reply_reopens_its_record_with_the_index_row_the_plan_names(
    stores: Stores, counter: RequestCounter, tmp_path: Path, older_build: bool
) -> None:
    """The map stage read the closed record, so the plan names its index row: the file stage
    reopens record and index row without reading the record again. A plan of an older build
    (no index row in it) reads the record first, and files the same."""
    config = config_for(tmp_path)
    write(tmp_path, "1.eml", "door@example.ro", "Ușa", "Ușa scârțâie.")
    ingested(stores, tmp_path)
    map_and_file(stores, config, filer(stores, config))
    (record,) = helpers.records(stores)
    ref = records.ref_of(record)
    records.merge(stores, ref, {"Status": "closed"}, current=record)
    write(tmp_path, "2.eml", "door-2@example.ro", "Re: Ușa", "Iar.", "door@example.ro")
    ingested(stores, tmp_path)
    map_and_file(stores, config, None)
    (queued,) = stores.queues.receive(FILING, max_messages=1, visibility_timeout=60)
    plan = decode(queued.body, FilingPlan)
    assert (plan.action, plan.status, plan.record) == ("attach", "open", ref)
    assert plan.index_row is not None and plan.display_id == record["DisplayId"]
    if older_build:
        plan = plan.model_copy(update={"index_row": None, "display_id": None})
    counter.reset()
    file_plan(stores, config, encode(plan), now=NOW)
    assert counter.calls is not None
    reads = [p for _, m, p in counter.calls if m == "GET" and "/Records" in f"/{p}"]
    # The older build's plan: the record read (which names the log line's display id too).
    assert len(reads) == (1 if older_build else 0)
    reopened = stores.table(RECORDS).get("case", ref.key)
    assert reopened is not None and reopened["Status"] == "open"
    (index,) = stores.table(RECORDS).partition(
        "case", row_from=INDEX_ROWS, row_before=after_prefix(INDEX_ROWS)
    )
    assert (index["RecordKey"], index["Status"]) == (ref.key, "open")
    assert index["DisplayId"] == record["DisplayId"]
    filed = messages.filed(stores, id_key("door-2@example.ro"))
    assert filed is not None and filed["RecordKey"] == ref.key


def test_a_copy_that_loses_the_claim_reads_claim_and_index_in_one_request(
    stores: Stores, counter: RequestCounter, tmp_path: Path
) -> None:
    """The same mail in two mailboxes (To support@, Cc billing@): the copy mapped second loses
    the claim's insert and learns who holds it and whether the mail is filed from one query of
    the message's partition; a sighting either way, naming the record the first copy files."""
    support, billing, archive = tmp_path / "support", tmp_path / "billing", tmp_path / "archive"
    for folder in (support, billing, archive):
        folder.mkdir()
    config = parse_config(
        "record_types: [{name: case, prefix: CASE}]\nmailboxes:\n"
        + "".join(
            f"  - {{name: {f.name}, kind: local, path: '{f}', record_type: case}}\n"
            for f in (support, billing, archive)
        )
    )
    for folder in (support, billing, archive):
        write(folder, "1.eml", "copy@example.hu", "Nyomtató", "A nyomtató elakadt.")
    key = id_key("copy@example.hu")

    def mapped(folder: Path, file: Callable[[bytes, datetime], object] | None) -> list[FilingPlan]:
        ingest_mailbox(stores, folder.name, LocalSource(folder), now=NOW)
        (message,) = stores.queues.receive(INBOUND, max_messages=1, visibility_timeout=60)
        counter.reset()
        plans = map_queued(stores, config, message.body, now=NOW, file=file)
        stores.queues.delete(INBOUND, message)
        return plans

    def messages_calls() -> list[str]:
        assert counter.calls is not None
        return [m for _, m, p in counter.calls if p.split("/")[1].startswith("Messages")]

    (first,) = mapped(support, None)  # claimed, its plan waits on the filing queue
    assert first.action == "create" and first.record is not None
    (second,) = mapped(billing, None)
    assert (second.action, second.record, second.filed_copy) == ("sighting", first.record, False)
    assert messages_calls() == ["POST", "GET"]  # the lost insert, one read
    (queued,) = stores.queues.receive(FILING, max_messages=1, visibility_timeout=60)
    assert decode(queued.body, FilingPlan).action == "create"  # the first copy's plan
    file_plan(stores, config, queued.body, now=NOW)
    stores.queues.delete(FILING, queued)
    (third,) = mapped(archive, filer(stores, config))
    assert (third.action, third.record, third.filed_copy) == ("sighting", first.record, False)
    # The lost insert and one read in map; the file stage, told the copy is not the filed one,
    # only writes its sighting row.
    assert messages_calls() == ["POST", "GET", "PATCH"]
    sightings = list(
        stores.table(MESSAGES).partition(
            key, row_from=SIGHTING_ROWS, row_before=after_prefix(SIGHTING_ROWS)
        )
    )
    assert [r["Mailbox"] for r in sightings if r["Mailbox"] == "archive"] == ["archive"]
    filed = messages.filed(stores, key)
    assert filed is not None and filed["Mailbox"] == "support"
    assert len(helpers.records(stores)) == 1
    assert len(timeline_entries(stores)) == 1


def test_a_reply_its_conversation_row_names_already_writes_no_link(
    stores: Stores, counter: RequestCounter, tmp_path: Path
) -> None:
    """Graph and EWS mail carries the server's conversation id: the first mail links it to its
    record; a reply found by it (its References stripped) reads the link and writes none."""
    config = config_for(tmp_path)
    conversation = "AAQkADAwATM0MDAAMS1iNTcwLWE5ZmYtMDACLTAwCgAQAHc="
    first = write(tmp_path, "1.eml", "conv-1@example.fi", "Tulostin", "Tulostin on jumissa.")
    reply = write(tmp_path, "2.eml", "conv-2@example.fi", "VS: Tulostin", "Taas.")
    for source_id, raw in (("1", first), ("2", reply)):
        queue_message(
            stores, "support", SourceMessage(source_id, raw, conversation_id=conversation), NOW
        )
        counter.reset()
        map_and_file(stores, config, filer(stores, config))
        assert counter.calls is not None
        links = [m for _, m, p in counter.calls if p.split("/")[1].startswith("Conversations")]
        # The first mail: the link read (none yet) and written; the reply: read only.
        assert links == (["GET", "PATCH"] if source_id == "1" else ["GET"])
    root = messages.filed(stores, id_key("conv-1@example.fi"))
    answer = messages.filed(stores, id_key("conv-2@example.fi"))
    assert root is not None and answer is not None
    assert answer["RecordKey"] == root["RecordKey"]  # found by the conversation id alone
    ref = RecordRef(type="case", key=root["RecordKey"])
    assert conversations.record_of(stores, "support", conversation) == ref


@pytest.mark.parametrize("older_build", [False, True])
def test_a_reply_learns_its_record_s_name_from_the_parent_s_index_row(
    stores: Stores,
    counter: RequestCounter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    older_build: bool,
) -> None:
    """Where the decision needs nothing of the record (`reply_when_closed: attach`), a reply
    reads no record: its parent's message index row names the record's display id for the file
    stage's log line (at INFO, as in production). A parent filed by an older build (no display
    id in its row) costs the log line its read, as before."""
    config = parse_config(
        "record_types: [{name: case, prefix: CASE, reply_when_closed: attach}]\n"
        f"mailboxes: [{{name: support, kind: local, path: '{tmp_path}', record_type: case}}]\n"
    )
    caplog.set_level(logging.INFO, logger="shared")
    write(tmp_path, "1.eml", "name-1@example.lt", "Spausdintuvas", "Vėl užstrigo.")
    ingested(stores, tmp_path)
    map_and_file(stores, config, filer(stores, config))
    (record,) = helpers.records(stores)
    parent = messages.filed(stores, id_key("name-1@example.lt"))
    assert parent is not None and parent["DisplayId"] == record["DisplayId"] == "CASE-1"
    if older_build:
        stores.table(MESSAGES).client.update_entity(
            {**parent, "DisplayId": None}, mode=UpdateMode.REPLACE
        )
    write(
        tmp_path, "2.eml", "name-2@example.lt", "Re: Spausdintuvas", "Ir vėl.", "name-1@example.lt"
    )
    ingested(stores, tmp_path)
    counter.reset()
    caplog.clear()
    map_and_file(stores, config, filer(stores, config))
    assert counter.calls is not None
    reads = [p for _, m, p in counter.calls if m == "GET" and p.split("/")[1].startswith("Records")]
    assert len(reads) == (1 if older_build else 0)
    assert any("record=CASE-1 action=attach" in r.getMessage() for r in caplog.records)
    reply = messages.filed(stores, id_key("name-2@example.lt"))
    assert reply is not None and reply["RecordKey"] == record["RowKey"]
    # Its own row names the record in turn, when the filing knew the name before writing it.
    assert reply.get("DisplayId") == (None if older_build else "CASE-1")
