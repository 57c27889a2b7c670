"""Issue 16 on the wire of Graph and EWS: the MIME the fake Graph's sendMail and the fake EWS's
CreateItem receive when a stranger's text (subject, title, attachment name) reaches mail we
send: the stranger's acknowledgement, a staff reply reusing the title, a resent attachment."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import compat32, default
from pathlib import Path
from typing import Any

import pytest
from exchangelib import close_connections  # type: ignore[import-untyped]

from shared.cli.azurite import Azurite
from shared.services.context import set_context
from shared.services.records import timeline
from shared.services.replies import reply_from_record
from shared.stages.polls import poll_all
from shared.store.stores import Stores
from tests.fakes.ews import FakeEws

from ..helpers import records
from ..test_outbound_wire import INNER, TWICE, header_block
from .graph_setup import USER as GRAPH_USER
from .graph_setup import GraphWorld, graph_world
from .test_ews import ANN, PASSWORD, EwsWorld

pytestmark = pytest.mark.azurite
__all__ = ["graph_world"]
LONG_ID = "AM0PR07MB6183" + "0F1E2D3C4B" * 12 + "@AM0PR07MB6183.eurprd07.prod.outlook.com"


def hostile(sender: str, to: str, attachment: bytes | None = None) -> bytes:
    head = (
        f"From: Mallory <{sender}>\r\nTo: {to}\r\nSubject: {TWICE}\r\n"
        f"Message-ID: <{LONG_ID}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    ).encode()
    if attachment is None:
        return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello.\r\n"
    # The name is an encoded word twice over: once decoded, it is one again.
    name = base64.b64encode(b"=?utf-8?q?a=0D=0ABcc:_x@evil.example=0D=0A?=.pdf").decode()
    return head + (
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        b'--b1\r\nContent-Type: application/pdf; name="=?utf-8?b?' + name.encode() + b'?="\r\n'
        b'Content-Disposition: attachment; filename="=?utf-8?b?' + name.encode() + b'?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(attachment)
        + b"--b1--\r\n"
    )


def check_sent(raw: bytes, recipient: str) -> Any:
    """The header block is ours alone; the mail is what it claims."""
    names = header_block(raw)
    assert "bcc" not in names and names.count("content-type") == 1, names
    sent = message_from_bytes(raw, policy=default)
    assert sent["Bcc"] is None and sent["To"] == recipient
    assert message_from_bytes(raw, policy=compat32)["In-Reply-To"] == f"<{LONG_ID}>"
    return sent


def api_reply(world: GraphWorld, record: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"{world.base}/records/case/{record}/reply",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def test_graph_send_mail_gets_the_strangers_text_as_text(graph_world: GraphWorld) -> None:
    world, fake = graph_world, graph_world.fake
    world.reconfigure(
        "    polling_only: true\n",
        "routes:\n  - {name: all, record_type: case, acknowledge: true}\n",
    )
    pdf = b"%PDF-1.4\n%%EOF\n"
    fake.add_message(
        GRAPH_USER, "inbox", hostile("mallory@example.net", GRAPH_USER, attachment=pdf)
    )
    assert poll_all(world.ctx, datetime.now(UTC))["m365"] == "queued 1"
    world.host.drain()

    # 1. The acknowledgement, sent without anyone signing in.
    ((mailbox, ack_raw),) = fake.sent_mail
    ack = check_sent(ack_raw, "mallory@example.net")
    assert mailbox == GRAPH_USER and ack["Subject"] == f"[CASE-1] {INNER}"
    assert ack.get_content_type() == "text/plain" and not ack.is_multipart()

    # 2. A staff reply that reuses the title, resending the stranger's attachment.
    (record,) = records(world.ctx.stores)
    assert record["Title"] == INNER
    (entry,) = [e for e in timeline(world.ctx.stores, record) if e.get("direction") == "in"]
    (attachment,) = entry["attachments"]
    assert (
        api_reply(world, "CASE-1", {"body": "Noted.", "attachments": [attachment["blob"]]}) == 202
    )
    world.host.drain()
    reply_raw = fake.sent_mail[-1][1]
    reply = check_sent(reply_raw, "mallory@example.net")
    assert reply["Subject"] == f"Re: {INNER} [CASE-1]"
    (part,) = list(reply.iter_attachments())
    assert part.get_filename() == attachment["filename"] and part.get_content() == pdf
    assert b"x@evil.example" not in reply_raw.replace(b"\r\n ", b"").split(b"\r\n\r\n")[0]
    for block in reply_raw.split(b"\r\n\r\n")[:3]:  # top-level and each part's headers
        assert block.isascii() and b"\nBcc" not in block and b"\nbcc" not in block

    # 3. The reply API's own subject, holding an encoded word.
    assert api_reply(world, "CASE-1", {"body": "x", "subject": INNER}) == 202
    world.host.drain()
    third = check_sent(fake.sent_mail[-1][1], "mallory@example.net")
    assert third["Subject"] == f"{INNER} [CASE-1]"


@pytest.fixture
def ews_world(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EwsWorld]:
    monkeypatch.setenv("EWS_TEST_PASSWORD", PASSWORD)
    with FakeEws() as fake:
        fake.add_user(ANN, PASSWORD)
        yield EwsWorld(fake, stores, azurite, tmp_path)
    close_connections()
    set_context(None)


def test_ews_gets_the_strangers_title_as_text_in_a_staff_reply(ews_world: EwsWorld) -> None:
    world = ews_world
    world.fake.add_messages(ANN, "inbox", [hostile("mallory@example.net", ANN)])
    assert world.poll() == "queued 1"
    world.host.drain()
    (record,) = records(world.stores)
    reply_from_record(world.stores, world.ctx.config, record, {"body": "On it."}, "agent")
    world.host.drain()
    (sent,) = world.fake.sent
    assert sent.recipients == ("mallory@example.net",)  # no smuggled Bcc among them
    mail = check_sent(sent.mime, "mallory@example.net")
    assert mail["Subject"] == f"Re: {INNER} [CASE-1]"
    assert mail.get_content().strip() == "On it."
