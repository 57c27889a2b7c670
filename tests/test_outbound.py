"""Outbound mail end to end on Azurite: acknowledgements through a real SMTP server (aiosmtpd)
that thread back, RFC 3834 refusals, and two Mailfiler instances that would answer each other
forever without the per-recipient limit."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from shared.cli.azurite import Azurite, free_port
from shared.core.config import parse_config
from shared.services.context import AppContext, set_context
from shared.services.messages import message_status
from shared.settings import AppSettings
from shared.stages.polls import poll_all
from shared.store.account import StorageSettings
from shared.store.stores import NOTICES, OUTBOX, Stores

from .helpers import local_host, records, timeline_entries

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SIGNING = "MF_TEST_SIGNING_KEY"


@dataclass
class Sink:
    """What a real SMTP server on loopback accepted; `relay` may pass each mail on."""

    port: int
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    relay: Callable[[bytes], None] | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), raw))
        if self.relay is not None:
            self.relay(raw)
        return "250 OK"

    def messages(self) -> list[Message]:
        return [message_from_bytes(raw, policy=default) for _, _, raw in self.received]


@pytest.fixture
def sink() -> Iterator[Sink]:
    found = Sink(free_port())
    controller = Controller(found, hostname="127.0.0.1", port=found.port)
    controller.start()
    yield found
    controller.stop()


def config_text(folder: Path, port: int, prefix: str = "CASE", extra: str = "") -> str:
    return f"""
record_types: [{{name: case, prefix: {prefix}}}]
mailboxes:
  - name: support
    kind: local
    path: "{folder}"
    record_type: case
    addresses: [support@{prefix.lower()}.example]
    smtp: {{host: 127.0.0.1, port: {port}, tls: none, auth: none}}
routes:
  - {{name: all, record_type: case, acknowledge: true}}
signing: {{key_settings: [{SIGNING}]}}
{extra}
"""


class Instance:
    """One Mailfiler: a local inbox folder, its configuration, and a local host."""

    def __init__(self, stores: Stores, azurite: Azurite, root: Path, text: str) -> None:
        self.folder = root / "inbox"
        self.folder.mkdir(parents=True)
        (root / "mailfiler.yaml").write_text(text.replace("{folder}", str(self.folder)))
        config = parse_config(text.replace("{folder}", str(self.folder)))
        settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
        self.ctx = AppContext(
            settings, config, root, stores, (b"a-signing-key-of-32-bytes-length",)
        )
        self.n = 0

    def deliver(self, raw: bytes) -> None:
        self.n += 1
        (self.folder / f"{self.n:04d}.eml").write_bytes(raw)

    def run(self) -> None:
        set_context(self.ctx)
        poll_all(self.ctx, datetime.now(UTC))
        local_host(self.ctx.stores.queues, visibility_timeout=0).drain()


@pytest.fixture
def one(
    stores: Stores, azurite: Azurite, tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Instance]:
    monkeypatch.setenv(SIGNING, "a-signing-key-of-32-bytes-length")
    yield Instance(stores, azurite, tmp_path, config_text(Path("{folder}"), sink.port))
    set_context(None)


def mail(n: int, sender: str = "ann@example.org", extra: str = "") -> bytes:
    return (
        f"From: Ann <{sender}>\r\nTo: support@case.example\r\nSubject: Printer {n} broken\r\n"
        f"Message-ID: <p{n}@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n{extra}\r\n"
        f"It is broken.\r\n"
    ).encode()


def test_an_acknowledgement_reaches_smtp_and_its_reply_threads_back(
    one: Instance, sink: Sink, stores: Stores
) -> None:
    one.deliver(mail(1))
    one.run()
    (ack,) = sink.messages()
    assert sink.received[0][1] == ["ann@example.org"]
    assert ack["Subject"] == "[CASE-1] Printer 1 broken"
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == "<p1@example.org>"
    assert ack["X-Mailfiler-Ref"] and ack["Message-ID"].startswith("<mf.case.")
    (notice,) = stores.table(NOTICES).all()
    assert notice["Sent"] is True and notice["SentMessageId"] in ack["Message-ID"]
    directions = sorted(e["Direction"] for e in timeline_entries(stores, ["Direction"]))
    assert directions == ["in", "out"]  # the acknowledgement is on the record too

    # Ann answers the acknowledgement; her client dropped the token from the subject.
    one.deliver(
        b"From: Ann <ann@example.org>\r\nTo: support@case.example\r\nSubject: Re: Printer\r\n"
        b"Message-ID: <p1-re@example.org>\r\nIn-Reply-To: " + ack["Message-ID"].encode() + b"\r\n"
        b"References: <p1@example.org> " + ack["Message-ID"].encode() + b"\r\n\r\nThanks.\r\n"
    )
    one.run()
    assert [r["DisplayId"] for r in records(stores)] == ["CASE-1"]
    assert len(timeline_entries(stores)) == 3
    assert len(sink.received) == 1  # a reply to a record is not acknowledged again

    # Again the same queue message (at-least-once delivery): nothing is sent twice.
    assert stores.table(OUTBOX).get("sent", f"{b'p1@example.org'.hex()}-0") is not None


def test_machines_and_no_reply_addresses_get_no_acknowledgement(
    one: Instance, sink: Sink, stores: Stores
) -> None:
    one.deliver(mail(1, extra="Auto-Submitted: auto-generated\r\n"))
    one.deliver(mail(2, sender="no-reply@example.org"))
    one.deliver(mail(3, extra="List-Id: <printers.example.org>\r\nPrecedence: list\r\n"))
    one.run()
    assert sink.received == []
    # Each is accounted for (filed, or recorded as machine mail: auto-replies and bulk mail open
    # no record by default), and none is answered.
    for n in (1, 2, 3):
        status = message_status(stores, f"<p{n}@example.org>")
        assert status is not None and status["status"] in ("filed", "dropped"), (n, status)
    assert not any(n.get("Sent") for n in stores.table(NOTICES).all())


def test_a_line_break_smuggled_into_a_subject_never_becomes_a_header(
    one: Instance, sink: Sink, stores: Stores
) -> None:
    # The subject of the original ends up in ours: a folded header must not smuggle a Bcc in.
    one.deliver(
        b"From: Ann <ann@example.org>\r\nTo: support@case.example\r\n"
        b"Subject: =?utf-8?q?Hi=0D=0ABcc=3A_victim=40example=2Enet?=\r\n"
        b"Message-ID: <inj@example.org>\r\n\r\nHello.\r\n"
    )
    one.run()
    ((_, recipients, raw),) = sink.received
    sent = message_from_bytes(raw, policy=default)
    assert recipients == ["ann@example.org"] and sent["Bcc"] is None
    assert sent["Subject"] == "[CASE-1] Hi Bcc: victim@example.net"  # data, on one line


def test_two_instances_answering_each_other_stop_within_the_limit(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile relay strips everything RFC 3834 relies on (Auto-Submitted, Precedence, the
    thread headers): only the per-recipient limit stands between two robots and a loop."""
    monkeypatch.setenv(SIGNING, "a-signing-key-of-32-bytes-length")
    limit = "outbound: {limits: {per_window: 3, per_day: 5}, templates: {acknowledge: " + (
        "{subject: 'Received $token', body: 'Noted.'}}}\nrate_limit: {per_sender: 100}\n"
    )
    a_port, b_port = free_port(), free_port()
    a = Instance(
        stores, azurite, tmp_path / "a", config_text(Path("{folder}"), a_port, "CASE", limit)
    )
    # The other instance has storage of its own: a second Azurite.
    other = Azurite()
    other.start()
    b_stores = Stores.connect(StorageSettings(connection_string=other.connection_string))
    b_stores.ensure()
    b_text = config_text(Path("{folder}"), b_port, "TICKET", limit)
    b = Instance(b_stores, other, tmp_path / "b", b_text)

    def hostile(to: Instance) -> Callable[[bytes], None]:
        def relay(raw: bytes) -> None:
            head, _, body = raw.partition(b"\r\n\r\n")
            kept = [
                line
                for line in head.split(b"\r\n")
                if not re.match(
                    rb"(?i)(auto-submitted|precedence|x-auto-response-suppress|in-reply-to|"
                    rb"references|x-mailfiler-ref):",
                    line,
                )
            ]
            to.deliver(b"\r\n".join(kept) + b"\r\n\r\n" + body)

        return relay

    sinks = [Sink(a_port, relay=hostile(b)), Sink(b_port, relay=hostile(a))]
    controllers = [Controller(s, hostname="127.0.0.1", port=s.port) for s in sinks]
    for controller in controllers:
        controller.start()
    try:
        # B's robot writes to A first (as if a person had): the ping-pong starts.
        a.deliver(
            b"From: support@ticket.example\r\nTo: support@case.example\r\nSubject: Hello\r\n"
            b"Message-ID: <start@ticket.example>\r\n\r\nHello.\r\n"
        )
        for _ in range(12):
            a.run()
            b.run()
        refused = [
            r["Reason"] for s in (stores, b_stores) for r in s.table(OUTBOX).partition("refused")
        ]
    finally:
        for controller in controllers:
            controller.stop()
        set_context(None)
        other.stop()
    sent_by_a, sent_by_b = len(sinks[0].received), len(sinks[1].received)
    assert 0 < sent_by_a <= 3 and 0 < sent_by_b <= 3, (sent_by_a, sent_by_b)
    assert any("limit" in r for r in refused), refused


def test_a_mail_sent_before_a_crash_is_not_sent_again_and_its_records_complete(
    one: Instance, sink: Sink, stores: Stores
) -> None:
    """The server took the mail, then the worker died before its bookkeeping: the `Outbox`
    row says so (`Recorded` false), and the redelivered message only completes the records."""
    mail_id = f"{b'p1@example.org'.hex()}-0"
    sent_at = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    stores.table(OUTBOX).upsert(
        {"PartitionKey": "sent", "RowKey": mail_id, "At": sent_at, "Recorded": False}
    )
    one.deliver(mail(1))
    one.run()
    assert sink.received == []  # never twice
    (notice,) = stores.table(NOTICES).all()
    assert notice["Sent"] is True and notice["SentAt"] == sent_at
    directions = sorted(e["Direction"] for e in timeline_entries(stores, ["Direction"]))
    assert directions == ["in", "out"]
    row = stores.table(OUTBOX).get("sent", mail_id)
    assert row is not None and row["Recorded"] is True
