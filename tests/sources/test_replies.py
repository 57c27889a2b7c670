"""Replies from a record, end to end: through SMTP with a copy in Dovecot's Sent folder (an IMAP
mailbox), and through the fake Graph's sendMail (a Graph mailbox) via the HTTP API."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.services.context import set_context
from shared.services.records import RecordError, timeline
from shared.services.replies import reply_from_record
from shared.stages.polls import poll_all
from shared.store.stores import OUTBOX, Stores
from tests.fakes.dovecot import Dovecot, require_dovecot

from ..helpers import records, timeline_entries
from ..test_outbound import Sink, sink
from .graph_setup import USER as GRAPH_USER
from .graph_setup import GraphWorld, graph_world, mime
from .test_imap import PASSWORD, USER, World, mail

pytestmark = pytest.mark.azurite
__all__ = ["graph_world", "sink"]


@pytest.fixture
def imap_world(
    stores: Stores,
    azurite: Azurite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sink: Sink,
) -> Iterator[World]:
    require_dovecot()
    monkeypatch.setenv("IMAP_TEST_PASSWORD", PASSWORD)
    with Dovecot(users={USER: PASSWORD}) as server:
        world = World(server, stores, azurite, tmp_path)
        world.configure(
            extra=f"    smtp: {{host: 127.0.0.1, port: {sink.port}, tls: none, auth: none}}\n"
        )
        yield world
    set_context(None)


def test_a_reply_goes_out_by_smtp_with_a_copy_in_sent_and_lands_on_the_timeline(
    imap_world: World, sink: Sink
) -> None:
    world = imap_world
    world.append([mail(1)])
    assert world.poll() == "queued 1"
    world.host.drain()
    (record,) = records(world.stores)
    with pytest.raises(RecordError, match="header injection"):
        reply_from_record(
            world.stores, world.ctx.config, record, {"body": "x", "subject": "a\r\nBcc: x@y.z"}, "t"
        )
    queued = reply_from_record(
        world.stores, world.ctx.config, record, {"body": "We are on it.\n"}, "agent@example.test"
    )
    world.host.drain()

    ((sender, recipients, raw),) = sink.received
    sent = message_from_bytes(raw, policy=default)
    assert (sender, recipients) == (USER, ["customer1@example.org"])
    assert sent["Subject"] == "Re: Question 1 [CASE-1]"
    assert sent["In-Reply-To"] == "<imap-1@example.org>" and sent["Auto-Submitted"] is None
    assert sent.get_content().strip() == "We are on it."
    with world.client() as client:  # the copy SMTP does not keep
        client.select_folder("Sent", readonly=True)
        (uid,) = client.search(["ALL"])
        copy = client.fetch([uid], [b"BODY.PEEK[]", b"FLAGS"])[uid]
        assert copy[b"BODY[]"] == raw and b"\\Seen" in copy[b"FLAGS"]
    directions = sorted(e["Direction"] for e in timeline_entries(world.stores, ["Direction"]))
    assert directions == ["in", "out"]
    assert world.stores.table(OUTBOX).get("sent", queued.id) is not None

    # The customer answers the reply: it files to the same record.
    answer = mail(2, subject="Re: Question 1 [CASE-1]")
    thread = b"\r\nIn-Reply-To: " + sent["Message-ID"].encode() + b"\r\n\r\n"
    world.append([answer.replace(b"\r\n\r\n", thread, 1)])
    assert world.poll() == "queued 1"
    world.host.drain()
    assert len(records(world.stores)) == 1 and len(timeline_entries(world.stores)) == 3


def test_a_reply_through_the_api_goes_out_by_graph_send_mail(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    graph_world.reconfigure("    polling_only: true\n")
    ctx = graph_world.ctx
    fake.add_message(GRAPH_USER, "inbox", mime(1))
    assert poll_all(ctx, datetime.now(UTC))["m365"] == "queued 1"
    graph_world.host.drain()
    (record,) = records(ctx.stores)
    request = urllib.request.Request(
        f"{graph_world.base}/records/case/{record['DisplayId']}/reply",
        data=json.dumps({"body": "Done.", "cc": ["boss@example.org"]}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        answer = json.loads(response.read())
    assert answer["status"] == "queued" and answer["record"] == "CASE-1"
    graph_world.host.drain()
    ((mailbox, raw),) = fake.sent_mail
    sent = message_from_bytes(raw, policy=default)
    assert mailbox == GRAPH_USER and sent["Cc"] == "boss@example.org"
    assert "[CASE-1]" in sent["Subject"]
    saved = fake.messages(GRAPH_USER, "sentitems")  # saveToSentItems
    assert [m["internetMessageId"] for m in saved] == [sent["Message-ID"]]
    directions = sorted(e["Direction"] for e in timeline_entries(ctx.stores, ["Direction"]))
    assert directions == ["in", "out"]


def test_a_reply_sends_attachments_of_the_record_s_own_mail_only(
    imap_world: World, sink: Sink
) -> None:
    world = imap_world
    pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    raw = (
        b"From: customer1@example.org\r\nTo: support@example.test\r\nSubject: Invoice\r\n"
        b"Message-ID: <inv-1@example.org>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b'--b1\r\nContent-Type: application/pdf; name="invoice.pdf"\r\n'
        b'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(pdf) + b"--b1--\r\n"
    )
    world.append([raw])
    assert world.poll() == "queued 1"
    world.host.drain()
    (record,) = records(world.stores)
    (entry,) = timeline(world.stores, record)
    (attachment,) = entry["attachments"]
    config = world.ctx.config
    with pytest.raises(RecordError, match="not an attachment of this record"):
        reply_from_record(
            world.stores, config, record, {"body": "x", "attachments": ["raw/att/0000"]}, "t"
        )
    reply_from_record(
        world.stores,
        config,
        record,
        {"body": "Corrected.", "attachments": [attachment["blob"]]},
        "t",
    )
    world.host.drain()
    ((_, _, sent_raw),) = sink.received
    (part,) = list(message_from_bytes(sent_raw, policy=default).iter_attachments())
    assert part.get_filename() == "invoice.pdf" and part.get_content_type() == "application/pdf"
    assert part.get_content() == pdf
