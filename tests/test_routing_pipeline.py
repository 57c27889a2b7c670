"""The routing engine end to end on Azurite: tokens, bounces, auto-replies, bulk, guests, holds."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from shared.cli.azurite import Azurite
from shared.cli.records import print_record, show_record
from shared.core.config import parse_config
from shared.core.contracts import RecordRef
from shared.core.signing import signed_message_id
from shared.services.context import AppContext, set_context
from shared.services.records import timeline as api_timeline
from shared.settings import AppSettings
from shared.stages.polls import poll_all
from shared.store import contacts
from shared.store import records as record_rows
from shared.store.keys import INDEX_ROWS, after_prefix, participant_row
from shared.store.stores import HELD, MESSAGES, NOTICES, RECORDS, TIMELINE, Stores

from .helpers import app_functions, local_host, records, timeline_counts, timeline_entries

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Mailbox:
    def __init__(self, ctx: AppContext, folder: Path) -> None:
        self.ctx, self.folder, self.n = ctx, folder, 0

    def deliver(self, text: str) -> None:
        """Drop one mail into the folder and run ingest, map and file to the end."""
        self.n += 1
        (self.folder / f"{self.n:03d}.eml").write_text(text.strip() + "\n")
        poll_all(self.ctx, NOW)
        local_host(self.ctx.stores.queues).drain()


BOX_CONFIG = """
record_types: [{{name: case, prefix: CASE}}]
mailboxes:
  - {{name: support, kind: local, path: "{folder}", record_type: case,
      addresses: [support@example.com]}}
routes:
  - {{name: all, record_type: case, acknowledge: true}}
rate_limit: {{per_sender: 2, window_minutes: 60}}
"""


@pytest.fixture
def make_box(stores: Stores, azurite: Azurite, tmp_path: Path) -> Iterator[Any]:
    def make(config_text: str = BOX_CONFIG) -> Mailbox:
        folder = tmp_path / "mail"
        folder.mkdir()
        config = parse_config(config_text.format(folder=folder))
        settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
        ctx = AppContext(settings, config, tmp_path, stores)
        set_context(ctx)
        return Mailbox(ctx, folder)

    yield make
    set_context(None)


@pytest.fixture
def box(make_box: Any) -> Mailbox:
    return make_box()  # type: ignore[no-any-return]


def record_of(stores: Stores, message_id_key: str) -> str:
    entry = stores.table(MESSAGES).get(message_id_key, "msg")
    assert entry is not None, "message not filed"
    record = stores.table(RECORDS).get(entry["RecordType"], entry["RecordKey"])
    assert record is not None
    return str(record["DisplayId"])


def key(message_id: str) -> str:
    return message_id.encode().hex()


def test_scenario_mailbox(box: Mailbox, stores: Stores) -> None:
    box.deliver(
        "From: Alice <alice@example.org>\nTo: support@example.com\nSubject: Printer broken\n"
        "Message-ID: <a1@example.org>\n\nThe printer is broken."
    )
    assert record_of(stores, key("a1@example.org")) == "CASE-1"
    guest = contacts.contact(stores, "alice@example.org")
    assert guest is not None and guest["Kind"] == "guest"
    notices = list(stores.table(NOTICES).all())
    assert [(n["Kind"], n["To"], n["Sent"]) for n in notices] == [
        ("acknowledge", "alice@example.org", False)
    ]

    # Outlook rewrote the subject and dropped the thread headers: the token still finds it.
    box.deliver(
        "From: Alice <alice@example.org>\nTo: support@example.com\n"
        "Subject: RE: [EXTERNAL] Printer broken \uff3bCASE-1\uff3d\n"
        "Message-ID: <a2@example.org>\n\nStill broken."
    )
    assert record_of(stores, key("a2@example.org")) == "CASE-1"

    # Our reply to someone bounces: the bounce lands on the record, the address is marked.
    box.deliver(
        "From: Support <support@example.com>\nTo: gone@example.net\nSubject: Re: Printer broken\n"
        "Message-ID: <s1@example.com>\nIn-Reply-To: <a1@example.org>\n\nWe are on it."
    )
    box.deliver(
        """From: MAILER-DAEMON@mx.example.net
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <b1@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="r"

--r
Content-Type: text/plain

Delivery failed.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; gone@example.net
Action: failed
Status: 5.1.1

--r
Content-Type: text/rfc822-headers

From: support@example.com
To: gone@example.net
Message-ID: <s1@example.com>

--r--"""
    )
    assert record_of(stores, key("b1@mx.example.net")) == "CASE-1"
    bounced = contacts.contact(stores, "gone@example.net")
    assert bounced is not None and bounced["UndeliverableSince"] is not None

    # An out-of-office answer is filed on the record but never answered.
    box.deliver(
        "From: Bob <bob@example.org>\nTo: support@example.com\n"
        "Subject: Automatic reply: Printer broken\nAuto-Submitted: auto-replied\n"
        "Message-ID: <o1@example.org>\nIn-Reply-To: <s1@example.com>\n\nI am away."
    )
    assert record_of(stores, key("o1@example.org")) == "CASE-1"
    assert len(list(stores.table(NOTICES).all())) == 1

    # A newsletter is dropped, with its reasons kept.
    box.deliver(
        "From: news@shop.example\nTo: support@example.com\nSubject: Deals\n"
        "List-Id: <deals.shop.example>\nList-Unsubscribe: <mailto:u@shop.example>\n"
        "Message-ID: <n1@shop.example>\n\nBuy now."
    )
    dropped = stores.table(MESSAGES).get(key("n1@shop.example"), "drop")
    assert dropped is not None and "bulk mail is dropped" in dropped["Reasons"]

    # A third new conversation from one sender within the window is held, not lost.
    for i in (1, 2, 3):
        box.deliver(
            f"From: carol@example.org\nTo: support@example.com\nSubject: Question {i}\n"
            f"Message-ID: <c{i}@example.org>\n\nHello {i}"
        )
    assert record_of(stores, key("c2@example.org")) == "CASE-3"
    held = list(stores.table(HELD).all())
    assert [h["RowKey"] for h in held] == [key("c3@example.org")]
    assert "held" in held[0]["Reasons"]

    counts = timeline_counts(stores)
    assert sorted(counts.values()) == [1, 1, 5]  # CASE-1: a1, a2, s1, b1, o1


def test_health_reports_held_mail(box: Mailbox, stores: Stores) -> None:
    for i in (1, 2, 3):
        box.deliver(
            f"From: dan@example.org\nTo: support@example.com\nSubject: Q {i}\n"
            f"Message-ID: <d{i}@example.org>\n\nHello {i}"
        )
    health = next(f for f in app_functions() if f.name == "health")
    response = health.call(func.HttpRequest("GET", "http://localhost/api/health", body=b""))
    body = json.loads(response.get_body())
    assert body["held"] == 1
    assert body["mailboxes"]["support"]["status"] == "ok"


def test_thread_policy_uses_the_addresses_on_the_records_mail(
    make_box: Any, stores: Stores
) -> None:
    box = make_box(
        BOX_CONFIG.replace(
            "{{name: case, prefix: CASE}}", "{{name: case, prefix: CASE, updates_from: thread}}"
        )
    )
    box.deliver(
        "From: alice@example.org\nTo: support@example.com\nCc: bob@example.org\n"
        "Subject: Plan\nMessage-ID: <p1@example.org>\n\nLet us plan."
    )
    box.deliver(
        "From: bob@example.org\nTo: support@example.com\nSubject: Re: Plan [CASE-1]\n"
        "Message-ID: <p2@example.org>\n\nAgreed."
    )
    assert record_of(stores, key("p2@example.org")) == "CASE-1"
    box.deliver(
        "From: eve@example.net\nTo: support@example.com\nSubject: Re: Plan [CASE-1]\n"
        "Message-ID: <p3@example.net>\n\nLet me in."
    )
    rejected = stores.table(MESSAGES).get(key("p3@example.net"), "reject")
    assert rejected is not None and "from its thread only" in rejected["Reasons"]


def test_long_reply_text_spills_to_blob_storage(box: Mailbox, stores: Stores) -> None:
    long_text = "\n".join(f"Line {i} of a very long report." for i in range(2000))
    box.deliver(
        "From: erin@example.org\nTo: support@example.com\nSubject: Report\n"
        f"Message-ID: <long@example.org>\n\n{long_text}"
    )
    (entry,) = timeline_entries(stores)
    assert len(entry["Text"]) == 8000 and long_text.startswith(entry["Text"])
    assert stores.blobs.get(entry["TextBlob"]) == long_text.encode()


def test_a_reply_reopens_a_closed_record(box: Mailbox, stores: Stores) -> None:
    box.deliver(
        "From: fay@example.org\nTo: support@example.com\nSubject: Door\n"
        "Message-ID: <f1@example.org>\n\nThe door squeaks."
    )
    (record,) = records(stores)
    record_rows.merge(stores, record_rows.ref_of(record), {"Status": "closed"}, current=record)
    box.deliver(
        "From: fay@example.org\nTo: support@example.com\nSubject: Re: Door\n"
        "Message-ID: <f2@example.org>\nIn-Reply-To: <f1@example.org>\n\nIt squeaks again."
    )
    reopened = stores.table(RECORDS).get("case", record["RowKey"])
    assert reopened is not None and reopened["Status"] == "open"
    assert record_of(stores, key("f2@example.org")) == record["DisplayId"]
    # The record's index row followed both changes: the list finds it by its status now.
    index_rows = stores.table(RECORDS).partition(
        "case", row_from=INDEX_ROWS, row_before=after_prefix(INDEX_ROWS)
    )
    (index,) = index_rows
    assert (index["RecordKey"], index["Status"]) == (record["RowKey"], "open")


def test_attachments_are_stored_checked_and_never_rendered(box: Mailbox, stores: Stores) -> None:
    exe = base64.b64encode(b"MZ\x90\x00" + b"\x00" * 60).decode()
    box.deliver(
        "From: gus@example.org\nTo: support@example.com\nSubject: Invoice\n"
        "Message-ID: <att@example.org>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nSee attached.\n"
        "--b\nContent-Type: application/pdf\n"
        'Content-Disposition: attachment; filename="invoice.pdf"\n'
        f"Content-Transfer-Encoding: base64\n\n{exe}\n--b--"
    )
    (entry,) = timeline_entries(stores)
    (attachment,) = json.loads(entry["Attachments"])
    assert attachment["filename"] == "invoice.pdf" and attachment["size"] == 64
    assert "stored as bytes" in attachment["note"]
    blob = stores.account.blobs.get_blob_client("raw", attachment["blob"])
    props = blob.get_blob_properties()
    assert props.content_settings.content_type == "application/octet-stream"
    assert props.content_settings.content_disposition == 'attachment; filename="invoice.pdf"'
    assert blob.download_blob().readall() == base64.b64decode(exe)


TRUST_CONFIG = """
record_types:
  - {{name: case, prefix: CASE, fields: [{{name: Priority, type: int, on_update: true}}]}}
mailboxes:
  - {{name: support, kind: local, path: "{folder}", record_type: case,
      addresses: [support@example.com], authserv_id: mx.example.com}}
  - {{name: support-sent, kind: local, path: "{folder}/../sent", record_type: case,
      addresses: [support@example.com], sent: true}}
routes:
  - {{name: all, record_type: case, acknowledge: true}}
rate_limit: {{per_sender: 20, window_minutes: 60}}
"""


def test_our_address_cannot_be_borrowed_and_field_changes_need_standing(
    make_box: Any, stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sent").mkdir()
    box = make_box(TRUST_CONFIG)
    box.ctx.signing_keys = (b"trust-test-key",)  # the context set_context holds: same object
    sent = Mailbox(box.ctx, tmp_path / "sent")

    def entry(message_id: str) -> dict[str, Any]:
        (found,) = [e for e in timeline_entries(stores) if e["MessageKey"] == key(message_id)]
        return found

    def priority() -> int:
        (record,) = records(stores)
        return int(record["F_Priority"])

    def reasons(message_id: str) -> str:
        row = stores.table(MESSAGES).get(key(message_id), "msg")
        assert row is not None
        return str(row["Reasons"])

    def on_record(address: str) -> bool:
        (record,) = records(stores)
        row = stores.table(TIMELINE).get(f"case-{record['RowKey']}", participant_row(address))
        return row is not None

    box.deliver(
        "From: =?utf-8?b?0JDQu9C40YHQsA==?= <alice@example.org>\nTo: support@example.com\n"
        "Subject: =?utf-8?b?0J/RgNC40L3RgtC10YAg0YHQu9C+0LzQsNC9?=\n"
        "Message-ID: <a1@example.org>\n\nPriority: 3\n\nThe printer is broken."
    )
    assert record_of(stores, key("a1@example.org")) == "CASE-1" and priority() == 3
    assert on_record("alice@example.org")  # the record's own mail gives standing

    # A stranger's phishing mail From our own address, naming the record by its token.
    box.deliver(
        "From: =?utf-8?b?0KHQu9GD0LbQsdCwINC/0L7QtNC00LXRgNC20LrQuA==?= <support@example.com>\n"
        "To: alice@example.org\nCc: mallory@evil.example\n"
        "Authentication-Results: evil.example; dmarc=pass header.from=example.com\n"
        "Subject: =?utf-8?b?UmU6INCf0YDQuNC90YLQtdGAINGB0LvQvtC80LDQvSBbQ0FTRS0xXQ==?=\n"
        "Message-ID: <spoof@evil.example>\n\n"
        "Priority: 1\n\nYour case needs you to log in: http://evil.example/login"
    )
    assert record_of(stores, key("spoof@evil.example")) == "CASE-1"
    spoof = entry("spoof@evil.example")
    assert spoof["Direction"] == "in"
    assert spoof["Flag"].startswith("From claims our address support@example.com")
    assert priority() == 3
    assert "field changes ignored (Priority): support@example.com has no standing on CASE-1" in (
        reasons("spoof@evil.example")
    )
    assert not on_record("mallory@evil.example")
    assert [n["To"] for n in stores.table(NOTICES).all()] == ["alice@example.org"]
    # Where people read it: the API's timeline entry carries the flag.
    (record,) = records(stores)
    api = {e["message_id"]: e for e in api_timeline(stores, record)}
    assert api["spoof@evil.example"]["flag"] == spoof["Flag"]
    assert api["a1@example.org"]["flag"] is None
    # And `mailfiler records show`.
    shown = show_record(stores, "CASE-1")
    assert shown is not None
    print_record(shown, as_json=False)
    printed = capsys.readouterr().out
    assert f"FLAGGED: {spoof['Flag']}" in printed and printed.count("FLAGGED") == 1

    # A stranger with the guessed token: the reply is filed, its field change is not.
    box.deliver(
        "From: eve@example.net\nTo: support@example.com\nSubject: Re: [CASE-1]\n"
        "Message-ID: <e1@example.net>\n\nPriority: 1\n\nurgent!"
    )
    assert record_of(stores, key("e1@example.net")) == "CASE-1" and priority() == 3
    assert "eve@example.net has no standing on CASE-1" in reasons("e1@example.net")
    assert not on_record("eve@example.net")  # writing to a record gives no standing

    # A participant may change it, also answering our (signed) acknowledgement; so may a known
    # contact who is not on the record's mail.
    ack = signed_message_id(
        RecordRef(type="case", key=records(stores)[0]["RowKey"]),
        "n1",
        b"trust-test-key",
        "mailfiler.invalid",
    )
    box.deliver(
        "From: alice@example.org\nTo: support@example.com\nSubject: Re: your case\n"
        f"Message-ID: <a2@example.org>\nIn-Reply-To: <{ack}>\n\nPriority: 2\n\nworse now"
    )
    assert "signed reference" in reasons("a2@example.org")
    assert priority() == 2
    contacts.put(stores, "dan@example.org", Kind="contact", Allowed=True)
    box.deliver(
        "From: dan@example.org\nTo: support@example.com\nSubject: Re: [CASE-1]\n"
        "Message-ID: <d1@example.org>\n\nPriority: 1\n\nescalating"
    )
    assert priority() == 1

    # Mail read from the sent folder is ours: outbound, and its recipients gain standing.
    sent.deliver(
        "From: Support <support@example.com>\nTo: alice@example.org\nCc: bob@example.org\n"
        "Subject: Re: [CASE-1]\nMessage-ID: <s1@example.com>\nIn-Reply-To: <a2@example.org>\n\n"
        "Bob from facilities will look at it."
    )
    assert entry("s1@example.com")["Direction"] == "out"
    assert entry("s1@example.com").get("Flag") is None
    box.deliver(
        "From: bob@example.org\nTo: support@example.com\nSubject: Re: [CASE-1]\n"
        "Message-ID: <b1@example.org>\n\nPriority: 4\n\nfixed, mostly"
    )
    assert priority() == 4

    # A mail to a crowd files in one transaction: its participants are bounded.
    crowd = ", ".join(f"p{i}@example.org" for i in range(150))
    box.deliver(
        f"From: bob@example.org\nTo: support@example.com\nCc: {crowd}\nSubject: Re: [CASE-1]\n"
        "Message-ID: <b2@example.org>\n\nFYI everyone"
    )
    assert record_of(stores, key("b2@example.org")) == "CASE-1"
    assert on_record("p47@example.org") and not on_record("p48@example.org")  # From, To, 48 Cc

    # Our address vouched for by the mailbox's own server: not flagged, still inbound.
    box.deliver(
        "Authentication-Results: mx.example.com (our edge); spf=none;\n"
        " dkim=pass header.d=example.com\n"
        "From: support@example.com\nTo: support@example.com\nSubject: Note [CASE-1]\n"
        "Message-ID: <n1@example.com>\n\nnote to self"
    )
    note = entry("n1@example.com")
    assert note["Direction"] == "in" and note.get("Flag") is None
    assert "mx.example.com vouches: dkim=pass header.d=example.com" in reasons("n1@example.com")


def _unfiled_rows(stores: Stores, message_id: str) -> list[dict[str, Any]]:
    """Rows recording a decision not to file the mail (drop, reject, hold), whatever their key."""
    return [
        dict(row)
        for row in stores.table(MESSAGES).all()
        if row["PartitionKey"] == key(message_id) and "Reasons" in row
    ]


def test_machine_mail_opens_no_record_by_default(box: Mailbox, stores: Stores) -> None:
    """Issue 17 points 4 and 5 on Azurite: an out-of-office to unknown mail and a delay notice
    in sendmail's plain-text form are recorded, not filed; an out-of-office to filed mail
    attaches to its record; nothing of it is answered."""
    # An out-of-office answering mail that was never filed here.
    box.deliver(
        "From: 山田 太郎 <yamada@example.jp>\nTo: support@example.com\n"
        "Subject: =?UTF-8?B?6Ieq5YuV5b+c562UOiDjgYrllY/jgYTlkIjjgo/jgZs=?=\n"
        "Auto-Submitted: auto-replied\nX-Autoreply: yes\nMessage-ID: <ooo-a@example.jp>\n"
        "In-Reply-To: <never-filed@example.com>\n\n不在です。12月10日に戻ります。"
    )
    # sendmail's delay warning, no report part (classified human and opened a record before).
    forms = Path(__file__).resolve().parent / "data" / "dsn_forms"
    box.deliver((forms / "sendmail-delay-issue17.eml").read_text())
    assert records(stores) == []
    assert list(stores.table(NOTICES).all()) == []
    ooo = _unfiled_rows(stores, "ooo-a@example.jp")
    assert [(r["Kind"], r["Mailbox"]) for r in ooo] == [("auto_reply", "support")]
    assert "recorded, not filed" in ooo[0]["Reasons"]
    assert stores.blobs.get(ooo[0]["Blob"]) is not None  # the raw mail is kept
    delay = _unfiled_rows(stores, "202612061631.0B6Hx1aa012345@mail.example.net")
    assert [r["Kind"] for r in delay] == ["bounce"]
    assert "order-1842@example.com" in delay[0]["Reasons"]

    # A person's mail opens a record; the out-of-office answering it attaches there.
    box.deliver(
        "From: Alice <alice@example.org>\nTo: support@example.com\nSubject: Printer broken\n"
        "Message-ID: <p1@example.org>\n\nThe printer is broken."
    )
    box.deliver(
        "From: Alice <alice@example.org>\nTo: support@example.com\n"
        "Subject: Automatic reply: Printer broken\nAuto-Submitted: auto-replied\n"
        "Message-ID: <ooo-b@example.org>\nIn-Reply-To: <p1@example.org>\n\n"
        "Priority: 1\n\nI am away."
    )
    assert record_of(stores, key("ooo-b@example.org")) == "CASE-1"
    assert [r["DisplayId"] for r in records(stores)] == ["CASE-1"]
    assert sorted(timeline_counts(stores).values()) == [2]
    assert len(list(stores.table(NOTICES).all())) == 1  # the acknowledgement of p1 only
