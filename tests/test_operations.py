"""`mailfiler messages show` and `mailfiler poison list|replay` against Azurite."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.cli.operations import (
    cmd_messages_show,
    cmd_poison_list,
    cmd_poison_replay,
)
from shared.core.config import parse_config
from shared.core.contracts import InboundMessage, PoisonMessage
from shared.core.message import id_key
from shared.services.context import AppContext, set_context
from shared.services.inbound import inbound_mails
from shared.services.messages import key_candidates
from shared.stages.map import map_queued
from shared.stages.polls import poll_all
from shared.store.queues import decode
from shared.store.stores import (
    EVENTS,
    FILING,
    INBOUND,
    MESSAGES,
    QUEUES,
    RECORDS,
    Stores,
    poison,
)

from .helpers import filed_keys, local_host, records, timeline_counts

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FIRST = "printer-1@contoso.example"
REPLY = "printer-3@contoso.example"


def file_samples(context: AppContext) -> None:
    poll_all(context, NOW)
    local_host(context.stores.queues).drain()


def show_json(stores: Stores, key: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert cmd_messages_show(stores, key, as_json=True) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


# --- messages show ----------------------------------------------------------------------------


def test_key_candidates() -> None:
    assert key_candidates(f"<{FIRST}>") == [id_key(FIRST)]
    assert key_candidates(FIRST) == [id_key(FIRST)]
    hexed = id_key(FIRST)
    assert key_candidates(hexed) == [hexed, id_key(hexed)]
    assert key_candidates("s" + "0" * 64)[0] == "s" + "0" * 64
    assert key_candidates("") == []


def test_show_a_filed_message_by_key_id_and_bare_id(
    context: AppContext, capsys: pytest.CaptureFixture[str]
) -> None:
    file_samples(context)
    stores = context.stores
    by_key = show_json(stores, id_key(FIRST), capsys)
    assert show_json(stores, f"<{FIRST}>", capsys) == by_key
    assert show_json(stores, FIRST, capsys) == by_key
    assert by_key["key"] == id_key(FIRST)
    assert by_key["message_id"] == FIRST
    filed = by_key["filed"]
    assert isinstance(filed, dict)
    record = stores.table(RECORDS).get("case", str(filed["record_key"]))
    assert record is not None
    assert filed["display_id"] == record["DisplayId"]
    assert str(filed["display_id"]).startswith("CASE-")
    assert filed["record_type"] == "case"
    assert filed["mailbox"] == "sample"
    assert filed["kind"] == "human"
    assert filed["filed_at"]
    assert filed["reasons"]
    assert by_key["unfiled"] == [] and by_key["also"] == []
    sightings = by_key["sightings"]
    assert isinstance(sightings, list) and len(sightings) == 1
    assert sightings[0]["mailbox"] == "sample"

    reply = show_json(stores, REPLY, capsys)
    reply_filed = reply["filed"]
    assert isinstance(reply_filed, dict)
    assert reply_filed["record_key"] == filed["record_key"]  # threaded onto the first

    assert cmd_messages_show(stores, f"<{FIRST}>", as_json=False) == 0
    text = capsys.readouterr().out
    assert f"message {id_key(FIRST)}" in text
    assert f"Message-ID: {FIRST}" in text
    assert f"filed on {filed['display_id']} (case {filed['record_key']})" in text
    assert "mailbox sample" in text
    assert "sightings: 1" in text
    for reason in filed["reasons"]:
        assert f"  - {reason}" in text


def test_every_filed_key_can_be_shown_including_mail_without_message_id(
    context: AppContext, capsys: pytest.CaptureFixture[str]
) -> None:
    file_samples(context)
    keys = filed_keys(context.stores)
    assert len(keys) == 8
    assert any(k.startswith("s") and len(k) == 65 for k in keys)  # 08-no-message-id.eml
    for key in keys:
        data = show_json(context.stores, key, capsys)
        assert data["key"] == key
        filed = data["filed"]
        assert isinstance(filed, dict)
        assert str(filed["display_id"]).startswith("CASE-")


def test_show_a_dropped_message_with_its_reasons(
    context: AppContext, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (sample_dir / "09-newsletter.eml").write_text(
        "From: news@shop.example\nTo: support@mailfiler.example\nSubject: Deals of the week\n"
        "Date: Tue, 24 Nov 2026 09:00:00 +0000\nMessage-ID: <deals-1@shop.example>\n"
        "List-Unsubscribe: <mailto:unsubscribe@shop.example>\nPrecedence: bulk\n\nBuy now.\n"
    )
    file_samples(context)
    data = show_json(context.stores, "<deals-1@shop.example>", capsys)
    assert data["filed"] is None
    unfiled = data["unfiled"]
    assert isinstance(unfiled, list) and len(unfiled) == 1
    assert unfiled[0]["action"] == "drop"
    assert unfiled[0]["kind"] == "bulk"
    assert unfiled[0]["reasons"]

    assert cmd_messages_show(context.stores, "deals-1@shop.example", as_json=False) == 0
    text = capsys.readouterr().out
    assert "drop (not filed)" in text
    assert "kind bulk" in text


def test_a_second_sighting_is_listed(
    context: AppContext, capsys: pytest.CaptureFixture[str]
) -> None:
    poll_all(context, NOW)
    first = next(
        m
        for b in context.stores.queues.peek(INBOUND, 32)
        for m in inbound_mails(b)
        if m.source_id.endswith("01-printer-jammed.eml")
    )
    host = local_host(context.stores.queues)
    host.drain()
    context.stores.queues.send(
        INBOUND, first.model_copy(update={"source_id": "elsewhere/01.eml", "folder": "Archive"})
    )
    host.drain()
    data = show_json(context.stores, FIRST, capsys)
    sightings = data["sightings"]
    assert isinstance(sightings, list)
    assert sorted(s["source_id"] for s in sightings) == sorted(
        [first.source_id, "elsewhere/01.eml"]
    )
    assert cmd_messages_show(context.stores, FIRST, as_json=False) == 0
    assert "sightings: 2" in capsys.readouterr().out


def test_an_unknown_message_exits_1_with_a_clear_message(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_messages_show(stores, "<nobody@nowhere.example>", as_json=False) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no message <nobody@nowhere.example> in table Messages" in captured.err
    assert id_key("nobody@nowhere.example") in captured.err
    assert cmd_messages_show(stores, "", as_json=True) == 1


# --- poison list / replay -----------------------------------------------------------------------


def test_poison_list_shows_stage_reason_attempts_and_blob(
    context: AppContext, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = context.stores
    stores.queues.send_bytes(INBOUND, b"not json at all")
    raw = b"From: a@b.example\r\nMessage-ID: <x@y>\r\nSubject: s\r\n\r\nbody\r\n"
    blob = stores.blobs.put_raw(raw)
    stores.queues.send(INBOUND, InboundMessage(mailbox="not-configured", source_id="x", blob=blob))
    local_host(stores.queues, visibility_timeout=0).drain()
    stores.queues.send_bytes(poison(INBOUND), b"a raw body the host moved")

    assert cmd_poison_list(stores, INBOUND, as_json=True) == 0
    entries = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(entries) == 3
    by_reason = {e["reason"].split(":")[0]: e for e in entries}
    malformed = by_reason["malformed"]
    assert malformed["stage"] == "map"
    assert malformed["attempts"] == 1
    assert malformed["body"] == "not json at all"
    failed = next(e for e in entries if e["reason"].startswith("failed 5 times"))
    assert failed["stage"] == "map"
    assert failed["attempts"] == 5
    assert failed["blob"] == blob
    assert "not in the configuration" in failed["reason"]
    assert failed["failed_at"]
    host_moved = next(e for e in entries if e["stage"] is None)
    assert host_moved["body"] == "a raw body the host moved"

    assert cmd_poison_list(stores, INBOUND, as_json=False) == 0
    text = capsys.readouterr().out
    assert text.startswith("inbound-poison: 3 message(s)")
    assert "stage map  attempts 5" in text
    assert f"blob {blob}" in text
    assert "moved by the host without a reason" in text

    assert cmd_poison_list(stores, FILING, as_json=False) == 0
    assert capsys.readouterr().out.startswith("filing-poison: 0 message(s)")


def test_unknown_queue_is_refused(stores: Stores, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_poison_list(stores, "inbound-poison", as_json=False) == 2
    known = ", ".join(QUEUES)
    assert f"unknown queue 'inbound-poison' (known: {known})" in capsys.readouterr().err
    assert cmd_poison_replay(stores, "nope", None) == 2
    assert cmd_poison_replay(stores, INBOUND, 0) == 2


def test_replay_after_the_fix_files_the_poisoned_mail(
    context: AppContext, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = context.stores
    assert poll_all(context, NOW) == {"sample": "queued 8"}
    # A configuration without mailbox "sample" (say, renamed by mistake): every message fails.
    broken = parse_config(
        f"record_types: [{{name: case, prefix: CASE}}]\nmailboxes:\n  - {{name: renamed, "
        f'kind: local, path: "{sample_dir}", record_type: case}}\n'
    )
    set_context(AppContext(context.settings, broken, context.base_dir, stores))
    try:
        local_host(stores.queues, visibility_timeout=0).drain()
    finally:
        set_context(context)
    assert filed_keys(stores) == []
    assert stores.queues.depth(INBOUND) == 0
    bodies = stores.queues.peek(poison(INBOUND))
    assert len(bodies) == 8
    assert all(
        "mailbox 'sample' is not in the configuration" in decode(b, PoisonMessage).reason
        for b in bodies
    )

    # The fix: the configuration with the mailbox is back. Replay one, then the rest.
    assert cmd_poison_replay(stores, INBOUND, 1) == 0
    assert capsys.readouterr().out.strip() == (
        "replayed 1 message(s) from inbound-poison to inbound; 7 left"
    )
    assert stores.queues.depth(INBOUND) == 1
    assert cmd_poison_replay(stores, INBOUND, None) == 0
    assert "replayed 7 message(s)" in capsys.readouterr().out
    assert stores.queues.depth(poison(INBOUND)) == 0
    local_host(stores.queues).drain()

    assert len(filed_keys(stores)) == 8
    assert sorted(timeline_counts(stores).values()) == [1, 2, 2, 3]
    assert sorted(r["DisplayId"] for r in records(stores)) == [f"CASE-{n}" for n in range(1, 5)]
    assert stores.queues.depth(poison(INBOUND)) == stores.queues.depth(poison(FILING)) == 0
    data = show_json(stores, FIRST, capsys)
    filed = data["filed"]
    assert isinstance(filed, dict) and str(filed["display_id"]).startswith("CASE-")


def test_replay_of_a_plan_poisoned_in_the_file_stage(
    context: AppContext, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = context.stores
    poll_all(context, NOW)
    # Map only (map_queued without `file` queues the plans): the 4 conversations' first
    # mails' plans wait on `filing`; their 4 replies wait on `inbound` for them to be filed.
    for message in stores.queues.receive(INBOUND, max_messages=32, visibility_timeout=60):
        map_queued(stores, context.config, message.body, now=NOW)
        stores.queues.delete(INBOUND, message)
    plans = stores.queues.peek(FILING, 32)
    assert len(plans) == 4
    stores.queues.clear(FILING)
    for plan in plans:  # as the file stage leaves them after its last attempt
        stores.queues.send(
            poison(FILING),
            PoisonMessage(
                queue=FILING,
                stage="file",
                reason="failed 5 times; last error: ServiceResponseError: timed out",
                dequeue_count=5,
                body=plan.decode("utf-8"),
                failed_at=NOW,
            ),
        )
    assert cmd_poison_replay(stores, FILING, None) == 0
    assert "replayed 4 message(s) from filing-poison to filing; 0 left" in capsys.readouterr().out
    assert sorted(stores.queues.peek(FILING, 32)) == sorted(plans)
    local_host(stores.queues).drain()
    assert len(filed_keys(stores)) == 8
    # Replaying the same plans again (say, a second operator) files nothing twice.
    for plan in plans:
        stores.queues.send_bytes(poison(FILING), plan)  # raw, as the host moves them
    assert cmd_poison_replay(stores, FILING, None) == 0
    local_host(stores.queues).drain()
    assert len(filed_keys(stores)) == 8
    assert sum(timeline_counts(stores).values()) == 8
    msg_rows = [e for e in stores.table(MESSAGES).all() if e["RowKey"] == "msg"]
    assert len(msg_rows) == 8


def test_replay_to_the_events_queue_and_of_an_empty_poison_queue(
    stores: Stores, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_poison_replay(stores, EVENTS, None) == 0
    assert "replayed 0 message(s)" in capsys.readouterr().out
    stores.queues.send_bytes(poison(EVENTS), b'{"v": 1, "id": "e1"}')
    assert cmd_poison_replay(stores, EVENTS, 5) == 0
    assert "replayed 1 message(s) from events-poison to events; 0 left" in (capsys.readouterr().out)
    assert stores.queues.peek(EVENTS) == [b'{"v": 1, "id": "e1"}']
