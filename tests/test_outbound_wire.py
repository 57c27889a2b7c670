"""Issue 16 on the wire: what a real SMTP server (aiosmtpd) receives when a stranger's mail
tries to speak with our voice (points 1, 2), the reply API answering at once (point 7), and the
per-recipient limit holding under concurrent workers (point 5, outbound half)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email import message_from_bytes
from email.header import Header
from email.policy import compat32, default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from shared.cli.azurite import Azurite, free_port
from shared.core.contracts import OutboundMail
from shared.services.context import set_context
from shared.stages.outbound import handle_outbound
from shared.store import records as record_rows
from shared.store.keys import short_hash
from shared.store.stores import OUTBOUND, OUTBOX, Stores, poison

from .helpers import local_host, records
from .serving import serve_api
from .test_outbound import SIGNING, Instance, Sink, config_text, one, sink

pytestmark = pytest.mark.azurite
__all__ = ["one", "sink"]  # fixtures of test_outbound.py, used here

# What the stranger wants our acknowledgement to carry, once their encoded word is decoded.
INNER = (
    "=?utf-8?q?hi=0D=0ABcc:_victim@example.net=0D=0AContent-Type:_text/html=0D=0A=0D=0A"
    '<a_href=3D"http://evil.example/">verify_your_account</a>?='
)
# Encoded once more: our parser decodes the outer word, the old composer decoded the inner one.
TWICE = Header(INNER, "utf-8").encode(linesep="\r\n ")
TOP = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-auto-response-suppress",
    "precedence",
    "x-mailfiler-ref",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}


def header_block(raw: bytes) -> list[str]:
    head = raw.partition(b"\r\n\r\n")[0]
    assert head.isascii() and b"\n" not in head.replace(b"\r\n", b"")
    assert b"\r" not in head.replace(b"\r\n", b"")
    lines = head.decode("ascii").split("\r\n")
    assert all(len(line) <= 998 for line in lines)
    return [line.split(":", 1)[0].lower() for line in lines if not line[:1].isspace()]


def stranger(n: int, subject: str, sender: str = "mallory@example.net") -> bytes:
    return (
        f"From: Mallory <{sender}>\r\nTo: support@case.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <hostile-{n}@example.net>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello.\r\n"
    ).encode()


def test_a_strangers_twice_encoded_subject_never_becomes_our_headers(
    one: Instance, sink: Sink, stores: Stores
) -> None:
    """No credentials needed: any stranger's mail on a route with `acknowledge: true` makes us
    send a mail whose subject carries theirs. It must arrive as their literal text."""
    one.deliver(stranger(1, TWICE))
    one.run()
    ((sender, recipients, raw),) = sink.received
    assert (sender, recipients) == ("support@case.example", ["mallory@example.net"])
    names = header_block(raw)
    assert sorted(names) == sorted(TOP) and len(names) == len(TOP)  # no Bcc, no 2nd type
    sent = message_from_bytes(raw, policy=default)
    assert sent["Bcc"] is None and sent.get_content_type() == "text/plain"
    assert not sent.is_multipart() and list(sent.iter_attachments()) == []
    (record,) = records(stores)
    assert sent["Subject"] == f"[{record['DisplayId']}] {INNER}"  # the literal text
    assert sent["In-Reply-To"] == "<hostile-1@example.net>"
    assert b"victim@example.net" not in raw.partition(b"\r\n\r\n")[0]  # only encoded


@pytest.mark.parametrize(
    "subject",
    [
        "プリンターが燃えています（至急）",
        "الطابعة لا تعمل منذ الصباح",
        "Printer 🔥🔥 on fire 🎉",
        "Принтер не работает",
    ],
)
def test_non_latin_subjects_round_trip_in_the_acknowledgement(
    one: Instance, sink: Sink, subject: str
) -> None:
    one.deliver(stranger(2, Header(subject, "utf-8").encode(), sender="ann@example.org"))
    one.run()
    ((_, _, raw),) = sink.received
    header_block(raw)
    sent = message_from_bytes(raw, policy=default)
    assert sent["Subject"] == f"[CASE-1] {subject}"
    assert subject in sent.get_content() or "[CASE-1]" in sent.get_content()


def test_long_outlook_and_signed_ids_thread_as_plain_tokens(
    one: Instance, sink: Sink, stores: Stores
) -> None:
    long_id = "AM0PR07MB6183" + "A1B2C3D4E5" * 10 + "@AM0PR07MB6183.eurprd07.prod.outlook.com"
    one.deliver(
        b"From: Ann <ann@example.org>\r\nTo: support@case.example\r\nSubject: Printer\r\n"
        b"Message-ID: <" + long_id.encode() + b">\r\n\r\nHello.\r\n"
    )
    one.run()
    ((_, _, raw),) = sink.received
    sent = message_from_bytes(raw, policy=compat32)
    assert sent["In-Reply-To"] == f"<{long_id}>"
    assert sent["References"] == f"<{long_id}>"
    assert "=?" not in sent["In-Reply-To"] and "=?" not in sent["Message-ID"]
    assert re.fullmatch(r"<mf\.case\.[0-9a-f]+\.[0-9a-z]+\.[0-9a-f]{20}@[^>]+>", sent["Message-ID"])


# --- Point 7: the reply API answers now --------------------------------------------------------


class ApiWorld:
    """A local mailbox that sends by SMTP, one without a way to send, one disabled; a record
    made from a stranger's mail; the local host's HTTP API on loopback."""

    def __init__(self, stores: Stores, azurite: Azurite, root: Path, port: int) -> None:
        (root / "nosend").mkdir(parents=True)
        (root / "paused").mkdir(parents=True)
        extra = f"""
  - name: nosend
    kind: local
    path: "{root / "nosend"}"
    addresses: [nosend@case.example]
  - name: paused
    kind: local
    path: "{root / "paused"}"
    enabled: false
    addresses: [paused@case.example]
    smtp: {{host: 127.0.0.1, port: {port}, tls: none, auth: none}}
"""
        text = config_text(Path("{folder}"), port).replace(
            "routes:", extra.lstrip("\n") + "routes:"
        )
        self.one = Instance(stores, azurite, root, text)
        self.stores = stores
        self.base = ""  # the API's, once served (the fixture)

    def reply(self, record: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.base}/records/case/{record}/reply",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def queued(self) -> int:
        return len(self.stores.queues.peek(OUTBOUND))


@pytest.fixture
def api(
    stores: Stores, azurite: Azurite, tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ApiWorld]:
    monkeypatch.setenv(SIGNING, "a-signing-key-of-32-bytes-length")
    world = ApiWorld(stores, azurite, tmp_path, sink.port)
    with serve_api(local_host(stores.queues)) as served:
        world.base = served.base
        world.one.deliver(stranger(1, "Printer broken", sender="ann@example.org"))
        world.one.deliver(stranger(2, "Scanner broken"))
        world.one.run()
        sink.received.clear()
        try:
            yield world
        finally:
            set_context(None)


def title_of(stores: Stores, title: str) -> str:
    return next(str(r["DisplayId"]) for r in records(stores) if r["Title"] == title)


@pytest.mark.parametrize(
    ("body", "code", "reason"),
    [
        ({"subject": "Hi\x0bthere"}, "invalid_subject", "U+000B"),
        ({"subject": "Hi\x0cthere"}, "invalid_subject", "U+000C"),
        ({"subject": "Hi\x85there"}, "invalid_subject", "U+0085"),
        ({"subject": "Hi\u2028there"}, "invalid_subject", "U+2028"),
        ({"subject": "Hi\u2029there"}, "invalid_subject", "U+2029"),
        ({"subject": "Hi\x1bthere"}, "invalid_subject", "U+001B"),
        ({"subject": "Hi\r\nBcc: x@evil.example"}, "invalid_subject", "header injection"),
        ({"subject": "a\ud800b"}, "invalid_subject", "not valid Unicode"),
        ({"mailbox": "paused"}, "cannot_send", "mailbox paused is disabled"),
        ({"mailbox": "nosend"}, "cannot_send", "give it an smtp block"),
        ({"mailbox": "nowhere"}, "unknown_mailbox", "not configured"),
        ({"to": ["пользователь@пример.рф"]}, "invalid_recipient", "SMTPUTF8"),
        ({"to": ["ann@exa_mple.org"]}, "invalid_recipient", "invalid domain"),
        ({"to": ["ann@example.org, bob@example.org"]}, "invalid_recipient", "not one address"),
        ({"cc": ['"a b"@example.org']}, "invalid_recipient", "not a valid address"),
        ({"to": []}, "no_recipient", "name a recipient"),
    ],
)
def test_a_reply_that_could_not_be_sent_is_a_422_now_and_nothing_is_queued(
    api: ApiWorld, sink: Sink, body: dict[str, Any], code: str, reason: str
) -> None:
    record = title_of(api.stores, "Printer broken")
    status, answer = api.reply(record, {"body": "We are on it.", **body})
    assert status == 422, answer
    assert answer["error"]["code"] == code and reason in answer["error"]["message"], answer
    assert api.queued() == 0
    api.one.run()
    assert sink.received == []


def test_a_title_with_control_characters_needs_a_subject_of_the_callers(
    api: ApiWorld, sink: Sink
) -> None:
    """Intake puts titles on one line; one that holds a control character all the same (an
    older record, an edit) is refused for the derived subject, with the reason, at once."""
    (row,) = [r for r in records(api.stores) if r["Title"] == "Scanner broken"]
    record_rows.merge(api.stores, record_rows.ref_of(row), {"Title": "Scan\x0bner"})
    record = str(row["DisplayId"])
    status, answer = api.reply(record, {"body": "On it."})
    assert status == 422 and answer["error"]["code"] == "invalid_subject", answer
    assert "record's title" in answer["error"]["message"] and "U+000B" in answer["error"]["message"]
    assert api.queued() == 0
    status, answer = api.reply(record, {"body": "On it.", "subject": "Re: scanner"})
    assert status == 202, answer
    api.one.run()
    ((_, recipients, raw),) = sink.received
    assert recipients == ["mallory@example.net"]
    assert message_from_bytes(raw, policy=default)["Subject"] == f"Re: scanner [{record}]"


def test_an_idna_recipient_goes_out_as_punycode_in_the_envelope_and_the_header(
    api: ApiWorld, sink: Sink, stores: Stores
) -> None:
    record = title_of(api.stores, "Printer broken")
    status, answer = api.reply(
        record, {"body": "Привет.", "to": ["Иван <ivan@пример.рф>"], "cc": ["b@例え.テスト"]}
    )
    assert status == 202, answer
    assert answer["to"] == ["ivan@xn--e1afmkfd.xn--p1ai"]
    api.one.run()
    ((_, recipients, raw),) = sink.received
    assert recipients == ["ivan@xn--e1afmkfd.xn--p1ai", "b@xn--r8jz45g.xn--zckzah"]
    sent = message_from_bytes(raw, policy=default)
    assert sent["To"] == "ivan@xn--e1afmkfd.xn--p1ai" and sent["Cc"] == "b@xn--r8jz45g.xn--zckzah"
    assert sent.get_content().strip() == "Привет."
    assert stores.table(OUTBOX).get("sent", f"{answer['id']}") is not None


def test_a_given_subject_holding_an_encoded_word_goes_out_as_that_text(
    api: ApiWorld, sink: Sink
) -> None:
    record = title_of(api.stores, "Printer broken")
    status, _ = api.reply(record, {"body": "x", "subject": INNER})
    assert status == 202
    api.one.run()
    ((_, recipients, raw),) = sink.received
    assert recipients == ["ann@example.org"]
    names = header_block(raw)
    assert "bcc" not in names and names.count("content-type") == 1
    sent = message_from_bytes(raw, policy=default)
    assert sent["Subject"] == f"{INNER} [{record}]" and sent.get_content_type() == "text/plain"


# --- Point 5 (outbound half): the per-recipient limit under concurrent workers --------------


def test_thirty_automatic_mails_to_one_address_on_four_workers_send_exactly_the_limit(
    one: Instance, sink: Sink, stores: Stores
) -> None:
    limit = one.ctx.config.outbound.limits.per_window
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    mails = [
        OutboundMail(
            id=f"ack-storm-{n}",
            kind="acknowledge",
            mailbox="support",
            to=("Ann@Example.org" if n % 2 else "ann@example.org",),
            original_subject=f"Printer {n}",
            original_sender="ann@example.org",
        )
        for n in range(30)
    ]
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda m: handle_outbound(one.ctx, m.model_dump_json().encode(), now), mails)
        )
    sent = [a for a in answers if a.startswith("sent")]
    refused = [a for a in answers if a.startswith("refused")]
    assert len(sink.received) == limit == len(sent)
    assert len(refused) == 30 - limit and all("(limit)" in a for a in refused), refused
    outbox = {
        (row["PartitionKey"], row["RowKey"])
        for part in ("sent", "refused")
        for row in stores.table(OUTBOX).partition(part)
    }
    assert {rk for _, rk in outbox} == {m.id for m in mails} and len(outbox) == 30  # none lost
    # A redelivery of a mail that was sent sends nothing and takes no second slot.
    first = next(m for m, a in zip(mails, answers, strict=True) if a.startswith("sent"))
    assert handle_outbound(one.ctx, first.model_dump_json().encode(), now) == "already sent"
    assert len(sink.received) == limit


def test_a_redelivered_mail_keeps_its_own_slot(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SMTP server is down for the first attempts (the queue retries them): each retry
    finds the slot the first attempt took and takes no other, so retries cannot eat the limit."""
    monkeypatch.setenv(SIGNING, "a-signing-key-of-32-bytes-length")
    found = Sink(free_port())  # nobody listens there yet
    one = Instance(stores, azurite, tmp_path, config_text(Path("{folder}"), found.port))
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    mail = OutboundMail(id="ack-retry", kind="acknowledge", mailbox="support", to=("a@b.example",))
    body = mail.model_dump_json().encode()
    for _ in range(3):
        with pytest.raises(OSError, match="ConnectionRefused"):
            handle_outbound(one.ctx, body, now)
    controller = Controller(found, hostname="127.0.0.1", port=found.port)
    controller.start()
    try:
        assert handle_outbound(one.ctx, body, now).startswith("sent")
    finally:
        controller.stop()
    assert len(found.received) == 1
    (slots,) = [r for r in stores.table(OUTBOX).all() if r["RowKey"] == "slots"]
    assert list(json.loads(slots["Slots"])) == [short_hash("ack-retry", length=12)]


def test_the_stage_keeps_its_own_checks_and_refuses_at_once(
    api: ApiWorld, sink: Sink, stores: Stores
) -> None:
    """Mail queued before a mailbox was disabled, or by an older version: the outbound stage
    refuses it with the reason at the first attempt, never five retries into poison."""
    cases = {
        "paused": ("paused", "ann@example.org", "Hi", "mailbox paused is disabled"),
        "nosend": ("nosend", "ann@example.org", "Hi", "give it an smtp block"),
        "vt": ("support", "ann@example.org", "Hi\x0bthere", "U+000B"),
        "utf8": ("support", "пользователь@пример.рф", "Hi", "SMTPUTF8"),
    }
    for name, (mailbox, to, subject, _) in cases.items():
        stores.queues.send(
            OUTBOUND,
            OutboundMail(
                id=f"reply-{name}",
                kind="reply",
                mailbox=mailbox,
                to=(to,),
                subject=subject,
                body="x",
            ),
        )
    api.one.run()
    assert sink.received == []
    assert stores.queues.peek(poison(OUTBOUND)) == []
    refused = {r["RowKey"]: r["Reason"] for r in stores.table(OUTBOX).partition("refused")}
    assert {k: v for k, v in refused.items() if k.startswith("reply-")}.keys() == {
        f"reply-{n}" for n in cases
    }
    for name, (*_, why) in cases.items():
        assert why in refused[f"reply-{name}"], refused
