"""The pipeline end to end on Azurite, driven through the functions function_app registers."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.core.config import parse_config
from shared.core.contracts import FilingPlan, InboundMessage, PoisonMessage
from shared.services.context import AppContext, set_context
from shared.services.inbound import inbound_mails
from shared.services.ingest import bundle_body
from shared.services.mailboxes import mailbox_status
from shared.services.poison import replay_body
from shared.settings import AppSettings
from shared.stages.map import map_queued
from shared.stages.polls import poll_all
from shared.store.queues import decode, encode
from shared.store.stores import ACTIONS, FILING, INBOUND, MESSAGES, TIMELINE, Stores, poison

from .helpers import filed_keys, local_host, records, timeline_counts, timeline_entries

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_sample_mail_is_filed_with_replies_threaded(context: AppContext) -> None:
    assert poll_all(context, NOW) == {"sample": "queued 8"}
    host = local_host(context.stores.queues)
    processed = host.drain()
    # Each mail is filed by the invocation that maps it: none needed the `filing` queue. The
    # poll sent its 8 mails as one bundle (a reply mapped before its parent is filed would wait
    # for it, put back on the queue alone: mapped more than once, filed once).
    assert processed.get(FILING, 0) == 0 and 1 <= processed[INBOUND] < 8
    # What `mailfiler import --process` shows on its bar: mails, not queue messages.
    assert host.mails_mapped >= 8
    assert len(filed_keys(context.stores)) == 8

    recs = {r["Title"]: r for r in records(context.stores)}
    assert set(recs) == {
        "Printer on floor 3 is jammed",
        "Invoice 2291 charges us twice",
        "Zugang gesperrt – bitte helfen",
        "VPN drops every hour",
    }
    assert sorted(r["DisplayId"] for r in recs.values()) == ["CASE-1", "CASE-2", "CASE-3", "CASE-4"]
    assert recs["Invoice 2291 charges us twice"]["F_ProblemType"] == "Billing"
    assert "F_ProblemType" not in recs["Printer on floor 3 is jammed"]
    counts = timeline_counts(context.stores)
    by_title = {title: counts[f"case-{r['RowKey']}"] for title, r in recs.items()}
    assert by_title == {
        "Printer on floor 3 is jammed": 3,
        "Invoice 2291 charges us twice": 2,
        "Zugang gesperrt – bitte helfen": 2,
        "VPN drops every hour": 1,
    }
    assert len(filed_keys(context.stores)) == 8
    assert mailbox_status(context)["sample"]["status"] == "ok"


def test_polling_again_adds_nothing(context: AppContext) -> None:
    poll_all(context, NOW)
    host = local_host(context.stores.queues)
    host.drain()
    assert poll_all(context, NOW) == {"sample": "queued 0"}
    assert context.stores.queues.depth(INBOUND) == 0
    assert len(filed_keys(context.stores)) == 8


def test_redelivered_messages_change_nothing(context: AppContext) -> None:
    poll_all(context, NOW)
    inbound = context.stores.queues.peek(INBOUND, 32)
    host = local_host(context.stores.queues)
    host.drain()
    before = (timeline_counts(context.stores), len(records(context.stores)))
    for body in inbound:  # the queue delivers every message a second time
        context.stores.queues.send_bytes(INBOUND, body)
    host.drain()
    assert (timeline_counts(context.stores), len(records(context.stores))) == before


def test_malformed_queue_message_goes_to_poison_with_reason(context: AppContext) -> None:
    context.stores.queues.send_bytes(INBOUND, b'{"v": 1, "mailbox": "sample"}')
    context.stores.queues.send_bytes(INBOUND, b"not json at all")
    # A bundle of more mails than a bundle may carry, each of them valid.
    one = b'{"v": 1, "mailbox": "sample", "source_id": "x", "blob": "b"}'
    too_many = b'{"v": 1, "kind": "bundle", "mails": [' + b",".join([one] * 33) + b"]}"
    context.stores.queues.send_bytes(INBOUND, too_many)
    local_host(context.stores.queues).drain()
    bodies = context.stores.queues.peek(poison(INBOUND))
    assert len(bodies) == 3
    reasons = sorted(decode(b, PoisonMessage).reason for b in bodies)
    assert reasons[0].startswith("malformed: not a valid InboundBundle")
    assert all(r.startswith("malformed: not a valid InboundMessage") for r in reasons[1:])


def test_failing_message_is_retried_then_poisoned_with_raw_mail_kept(context: AppContext) -> None:
    # A plan for a record type the config does not know fails on every attempt.
    raw = b"From: a@b.example\r\nMessage-ID: <x@y>\r\nSubject: s\r\n\r\nbody\r\n"
    blob = context.stores.blobs.put_raw(raw)
    context.stores.queues.send(
        INBOUND, InboundMessage(mailbox="not-configured", source_id="x", blob=blob)
    )
    local_host(context.stores.queues, visibility_timeout=0).drain()
    (body,) = context.stores.queues.peek(poison(INBOUND))
    failure = decode(body, PoisonMessage)
    assert failure.dequeue_count == 5
    assert "not in the configuration" in failure.reason
    assert failure.blob == blob
    assert context.stores.blobs.get(blob) == raw
    assert context.stores.queues.depth(INBOUND) == 0


def test_a_mail_failing_in_a_bundle_goes_to_poison_alone(context: AppContext) -> None:
    # A bundle of three (as a first sync sends them): the middle one names a mailbox the
    # configuration does not know and fails on every attempt; the others file at once.
    def mail(i: int, mailbox: str) -> bytes:
        raw = (
            f"From: Зоя <zoya{i}@example.ru>\r\nTo: support@example.com\r\n"
            f'Subject: Заявка {i} "mails": []\r\nMessage-ID: <bundle-{i}@example.ru>\r\n\r\n'
            f"Текст {i}\r\n"
        ).encode()
        blob = context.stores.blobs.put_raw(raw)
        return encode(InboundMessage(mailbox=mailbox, source_id=f"b{i}", blob=blob, raw=raw))

    mails = [mail(1, "sample"), mail(2, "not-configured"), mail(3, "sample")]
    context.stores.queues.send_bytes(INBOUND, bundle_body(mails))
    local_host(context.stores.queues, visibility_timeout=0).drain()
    assert len(filed_keys(context.stores)) == 2
    (body,) = context.stores.queues.peek(poison(INBOUND))
    failure = decode(body, PoisonMessage)
    # Its own message, its own five attempts, its own reason: not the bundle's.
    assert [m.source_id for m in inbound_mails(replay_body(body))] == ["b2"]
    assert failure.dequeue_count == 5 and "not in the configuration" in failure.reason
    assert context.stores.queues.depth(INBOUND) == 0


def test_the_same_mail_in_two_mailboxes_is_filed_once_with_both_sightings(
    stores: Stores, azurite: Azurite, sample_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(sample_dir, copy)
    config = parse_config(
        f"""
record_types: [{{name: case, prefix: CASE}}]
mailboxes:
  - {{name: sample, kind: local, path: "{sample_dir}", record_type: case}}
  - {{name: other, kind: local, path: "{copy}", record_type: case,
      after_filing: {{mark_read: true}}}}
"""
    )
    settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    ctx = AppContext(settings, config, tmp_path, stores)
    set_context(ctx)
    try:
        assert poll_all(ctx, NOW) == {"sample": "queued 8", "other": "queued 8"}
        local_host(stores.queues).drain()
    finally:
        set_context(None)
    assert len(filed_keys(stores)) == 8
    assert sum(timeline_counts(stores).values()) == 8
    assert len(records(stores)) == 4
    sightings = [e for e in stores.table(MESSAGES).all() if e["RowKey"].startswith("s-")]
    assert Counter(e["Mailbox"] for e in sightings) == {"sample": 8, "other": 8}
    # Mailbox "other" marks mail read after filing, whichever mailbox filed it first.
    actions = list(stores.table(ACTIONS).all())
    assert Counter((a["Mailbox"], a["Action"]) for a in actions) == {("other", "mark_read"): 8}


def test_a_filed_message_seen_in_another_folder_is_a_move(context: AppContext) -> None:
    poll_all(context, NOW)
    first = inbound_mails(context.stores.queues.peek(INBOUND, 1)[0])[0]
    host = local_host(context.stores.queues)
    host.drain()
    before = timeline_counts(context.stores)
    moved = first.model_copy(update={"folder": "Archive"})
    context.stores.queues.send(INBOUND, moved)
    host.drain()
    assert timeline_counts(context.stores) == before
    entries = [
        e
        for e in context.stores.table(MESSAGES).all()
        if e.get("SourceId") == first.source_id and e["RowKey"] == "msg"
    ]
    assert [e["Folder"] for e in entries] == ["Archive"]
    (row,) = entries
    entry = context.stores.table(TIMELINE).get(
        f"{row['RecordType']}-{row['RecordKey']}", row["TimelineRow"]
    )
    assert entry is not None and entry["Folder"] == "Archive"


def test_a_redelivered_plan_never_rewrites_the_timeline(context: AppContext) -> None:
    poll_all(context, NOW)
    host = local_host(context.stores.queues)
    # Map without filing (map_queued without `file` queues its plans on `filing`) until a
    # mail that waits for no other has its plan there; the host files the rest.
    stores = context.stores
    while not stores.queues.depth(FILING):
        (message,) = stores.queues.receive(INBOUND, max_messages=1, visibility_timeout=60)
        map_queued(stores, context.config, message.body, now=NOW)
        stores.queues.delete(INBOUND, message)
    plans = [decode(b, FilingPlan) for b in context.stores.queues.peek(FILING, 32)]
    host.drain()
    edited = plans[0].model_copy(
        update={"entry": plans[0].entry.model_copy(update={"snippet": "EDITED"})}  # type: ignore[union-attr]
    )
    context.stores.queues.send(FILING, edited)
    host.drain()
    snippets = [e["Snippet"] for e in timeline_entries(context.stores)]
    assert "EDITED" not in snippets and len(snippets) == 8


def test_a_reply_plan_names_its_record_as_people_do(context: AppContext) -> None:
    """The map stage read the record's row for the decision: its plan carries the record's
    display id, which the file stage uses for its log line, notices and events instead of
    reading the row again (issue 22: one storage call per reply)."""
    poll_all(context, NOW)
    local_host(context.stores.queues).drain()
    printer = next(r for r in records(context.stores) if r["Title"].startswith("Printer"))
    (context.base_dir / "mail" / "20-printer-again.eml").write_text(
        "From: Alice Example <alice@contoso.example>\nTo: support@mailfiler.example\n"
        "Subject: Re: Printer on floor 3 is jammed\nDate: Tue, 17 Nov 2026 09:00:00 +0100\n"
        "Message-ID: <printer-again@contoso.example>\nIn-Reply-To: <printer-3@contoso.example>\n"
        "References: <printer-1@contoso.example> <printer-3@contoso.example>\n\nJammed again.\n"
    )
    assert poll_all(context, NOW) == {"sample": "queued 1"}
    stores = context.stores
    (message,) = stores.queues.receive(INBOUND, max_messages=1, visibility_timeout=60)
    (plan,) = map_queued(stores, context.config, message.body, now=NOW)
    assert plan.action == "attach" and plan.record is not None
    assert plan.record.key == printer["RowKey"]
    assert plan.display_id == printer["DisplayId"]
