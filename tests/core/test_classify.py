"""The classifier on small hand-written messages: one scenario per rule, and the near misses."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core import classify as classify_module
from shared.core.classify import Classification, Dsn, OwnMail, classify
from shared.core.message import MailMessage
from shared.core.mime import parse_message

OWN = OwnMail(
    addresses=frozenset({"filer@ours.example"}),
    message_id_domains=frozenset({"mailfiler.ours.example"}),
)
SECRET = "Zebrafish-7731"  # body text that must never show up in reasons


def mail(headers: str, body: str = f"Hello,\n\n{SECRET} is the word.\n") -> MailMessage:
    """A message from header lines (``\\n``-separated) and a body; defaults fill the gaps."""
    lines = [line for line in headers.strip("\n").split("\n") if line]
    names = {line.split(":", 1)[0].lower() for line in lines if not line[0].isspace()}
    defaults = {
        "from": "From: Jane Doe <jane@person.example>",
        "to": "To: filer@ours.example",
        "subject": "Subject: Lunch on Friday",
        "message-id": "Message-ID: <abc123@person.example>",
        "date": "Date: Mon, 3 Jun 2024 10:00:00 +0200",
    }
    lines += [line for name, line in defaults.items() if name not in names]
    raw = ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")
    return parse_message(raw, mailbox="test", source_id="t")


def reasons_text(result: Classification) -> str:
    return " | ".join(result.reasons)


# --- scenario table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    headers: str
    kind: str
    body: str = f"Hello,\n\n{SECRET} is the word.\n"
    reason: str = ""  # a fragment one of the reasons must contain


OUTLOOK_REPLY = """
From: Jane Doe <jane@person.example>
Subject: RE: Budget 2025
In-Reply-To: <orig1@ours.example>
References: <orig1@ours.example>
Thread-Topic: Budget 2025
Thread-Index: AQHZ1234abcd==
X-Auto-Response-Suppress: All
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
Content-Language: en-US
Content-Type: text/plain; charset="us-ascii"
"""

CASES = [
    # -- human: the near misses first
    Case("plain", "", "human"),
    Case("outlook-reply-with-auto-response-suppress", OUTLOOK_REPLY, "human"),
    Case(
        "human-discussing-out-of-office",
        OUTLOOK_REPLY.replace("RE: Budget 2025", "Re: Out of office tomorrow?"),
        "human",
    ),
    Case("out-of-office-subject-without-any-header", "Subject: Out of office tomorrow?", "human"),
    Case("vacation-plans", "Subject: Vacation plans for August", "human"),
    Case(
        "gmail-reply",
        "Subject: Re: test\nIn-Reply-To: <x@ours.example>\n"
        "Message-ID: <CAF=abc@mail.gmail.com>\nMIME-Version: 1.0",
        "human",
    ),
    Case(
        "human-forwards-a-bounce",
        "Subject: Fw: Undeliverable: Budget 2025\nFrom: Jane Doe <jane@person.example>",
        "human",
        body="Can you look at this?\n\nUndeliverable: your message could not be delivered.\n",
    ),
    Case(
        "postmaster-human-answer",
        "From: Postmaster <postmaster@person.example>\nSubject: Re: your question about SPF",
        "human",
        body="Hi, yes the SPF record is fine now.\n",
    ),
    Case("customer-delivery-failed", "Subject: Delivery failed for order 1234", "human"),
    Case("customer-returned-mail", "Subject: Returned mail for the Smith account", "human"),
    Case("auto-submitted-no", "Auto-Submitted: no", "human"),
    Case(
        "our-domain-id-but-not-our-sender",
        "Message-ID: <x1@mailfiler.ours.example>\nFrom: jane@person.example",
        "human",
    ),
    Case("x-abuse-info-is-not-a-report", "X-AntiAbuse: Primary Hostname - host.example", "human"),
    # -- own loop
    Case("own-loop-header", "X-Mailfiler-Loop: 1", "own_loop", reason="X-Mailfiler-Loop"),
    Case("own-x-loop", "X-Loop: filer@ours.example", "own_loop", reason="X-Loop"),
    Case(
        "own-message-id-and-from",
        "Message-ID: <a1b2@mailfiler.ours.example>\nFrom: Filer <filer@ours.example>",
        "own_loop",
        reason="Message-ID",
    ),
    Case(
        "own-loop-beats-bounce",
        "X-Mailfiler-Loop: 1\nSubject: Undeliverable: x\nFrom: postmaster@ours.example",
        "own_loop",
    ),
    # -- bounces
    Case(
        "x-failed-recipients",
        "From: Mail Delivery System <Mailer-Daemon@mx.example>\n"
        "Subject: Mail delivery failed: returning message to sender\n"
        "X-Failed-Recipients: gone@example.net",
        "bounce",
        reason="X-Failed-Recipients",
    ),
    Case(
        "undeliverable-subject",
        "From: postmaster@corp.example\nSubject: Undeliverable: Budget 2025",
        "bounce",
        reason="Undeliverable",
    ),
    Case(
        "microsoft-outlook-null-sender",
        "From: Microsoft Outlook <postmaster@outlook.com>\nReturn-Path: <>\nSubject: Nyaan",
        "bounce",
        body="Your message to gone@example.net couldn't be delivered.\n",
        reason="Return-Path",
    ),
    Case(
        "daemon-with-null-return-path-and-body-phrase",
        "From: MAILER-DAEMON@mx.example\nReturn-Path: <>\nSubject: hello",
        "bounce",
        body="Hi. This is the qmail-send program at mx.example.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n",
        reason="qmail-send program",
    ),
    Case(
        "no-from-with-bounce-phrase",
        "From: MAILER-DAEMON <>\nSubject: Mail delivery failed",
        "bounce",
    ),
    Case(
        "delivery-status-notification-delay",
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n"
        "Subject: Delivery Status Notification (Delay)",
        "bounce",
    ),
    Case("failure-notice", "From: MAILER-DAEMON@mx.example\nSubject: failure notice", "bounce"),
    Case("german-subject", "From: postmaster@corp.example\nSubject: Unzustellbar: Test", "bounce"),
    # -- feedback
    Case("feedback-type-header", "Feedback-Type: abuse", "feedback", reason="Feedback-Type"),
    Case(
        "apple-unsubscribe-request",
        "Subject: unsubscribe\nAuto-Submitted: auto-replied\nX-Apple-Unsubscribe: true",
        "feedback",
    ),
    # -- auto replies
    Case("auto-submitted", "Auto-Submitted: auto-replied", "auto_reply", reason="Auto-Submitted"),
    Case("auto-generated", "Auto-Submitted: auto-generated", "auto_reply"),
    Case("x-autoreply", "X-Autoreply: yes", "auto_reply", reason="X-Autoreply"),
    Case("x-autorespond", "X-Autorespond: 1", "auto_reply", reason="X-Autorespond"),
    Case("x-autoresponder", "X-Autoresponder: on", "auto_reply"),
    Case("precedence-auto-reply", "Precedence: auto_reply", "auto_reply", reason="Precedence"),
    Case("exchange-inbox-rules", "X-MS-Exchange-Inbox-Rules-Loop: jane@corp.example", "auto_reply"),
    Case(
        "exchange-generated",
        "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent",
        "auto_reply",
    ),
    Case("apple-vacation", "X-Apple-Action: VACATION", "auto_reply"),
    Case("automatic-reply-prefix", "Subject: Automatic reply: Budget 2025", "auto_reply"),
    Case("auto-prefix", "Subject: AUTO: Jane Doe is out of the office", "auto_reply"),
    Case("auto-reply-brackets", "Subject: [Auto-Reply] Budget 2025", "auto_reply"),
    Case("de-prefix", "Subject: Automatische Antwort: Budget", "auto_reply"),
    Case("de-abwesenheit", "Subject: Abwesenheitsnotiz: Budget", "auto_reply"),
    Case("fr-prefix", "Subject: Réponse automatique : Budget", "auto_reply"),
    Case("es-prefix", "Subject: Respuesta automática: Budget", "auto_reply"),
    Case("it-prefix", "Subject: Risposta automatica: Budget", "auto_reply"),
    Case(
        "out-of-office-with-null-sender",
        "Subject: Out of Office\nReturn-Path: <>",
        "auto_reply",
        reason="absence phrase",
    ),
    Case(
        "fuera-de-la-oficina-with-precedence-bulk",
        "Subject: Fuera de la oficina\nPrecedence: bulk",
        "auto_reply",
    ),
    Case("afwezig-with-vacation-mailer", "Subject: Afwezig\nX-Mailer: vacation 1.2", "auto_reply"),
    Case(
        "read-receipt",
        "Subject: Read: Budget\nContent-Type: multipart/report;"
        ' report-type="disposition-notification"; boundary="b"',
        "auto_reply",
        body="--b\nContent-Type: text/plain\n\nRead.\n--b--\n",
    ),
    # -- bulk
    Case(
        "mailing-list",
        "List-Id: <dev.lists.example.org>\nList-Post: <mailto:dev@lists.example.org>\n"
        "Subject: [dev] Re: release plan",
        "bulk",
        reason="List-Id",
    ),
    Case(
        "list-unsubscribe",
        "List-Unsubscribe: <https://esp.example/u/1>",
        "bulk",
        reason="List-Unsubscribe",
    ),
    Case("precedence-bulk", "Precedence: bulk", "bulk", reason="Precedence: bulk"),
    Case("precedence-list", "Precedence: list", "bulk"),
    Case("precedence-junk", "Precedence: junk", "bulk"),
    Case("mailchimp", "X-Mailchimp-Campaign: 123", "bulk", reason="X-Mailchimp"),
    Case("campaign", "X-CampaignID: spring-sale", "bulk"),
    Case("esp-feedback-id", "Feedback-ID: 1:campaign:esp", "bulk"),
    Case("noreply", "From: Shop <noreply@shop.example>", "bulk", reason="no-reply"),
    Case("no-reply", "From: no-reply@shop.example", "bulk"),
    Case("do-not-reply", "From: do-not-reply@bank.example", "bulk"),
    Case(
        "auto-generated-notification-to-a-list",
        "Auto-Submitted: auto-generated\nList-Id: <ci.example>",
        "bulk",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_scenario(case: Case) -> None:
    result = classify(mail(case.headers, case.body), OWN)
    assert result.kind == case.kind, reasons_text(result)
    if case.kind != "human":
        assert result.reasons, "a machine verdict must say why"
    else:
        assert result.reasons == ()
    assert case.reason in reasons_text(result)
    assert SECRET not in reasons_text(result)
    assert (result.dsn is not None) == (case.kind == "bounce")


def test_own_loop_needs_configuration() -> None:
    msg = mail("Message-ID: <a1b2@mailfiler.ours.example>\nFrom: Filer <filer@ours.example>")
    assert classify(msg).kind == "human"  # the default OwnMail knows no addresses
    assert classify(mail("X-Mailfiler-Loop: yes")).kind == "own_loop"  # the header is default
    custom = OwnMail(loop_header="X-Our-Loop")
    assert classify(mail("X-Our-Loop: 1"), custom).kind == "own_loop"
    assert classify(mail("X-Mailfiler-Loop: 1"), custom).kind == "human"


# --- delivery status ---------------------------------------------------------------------------

DSN_MAIL = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: jane@ours.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <20240603100000.AB12@mx.example.net>
Date: Mon, 3 Jun 2024 10:00:00 +0200
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain

This is the mail system at host mx.example.net.
Your message could not be delivered to one or more recipients.

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Mon, 3 Jun 2024 09:59:58 +0200

Final-Recipient: rfc822; Gone.User@Example.ORG
Original-Recipient: rfc822;gone.user@example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <gone.user@example.org>: Recipient address
    rejected: User unknown in virtual mailbox table

--BOUNDARY
Content-Type: message/rfc822

From: Jane <jane@ours.example>
To: gone.user@example.org
Subject: Budget
Message-ID: <orig-42@mailfiler.ours.example>

Hello
--BOUNDARY--
"""


def parse(raw: bytes) -> MailMessage:
    return parse_message(raw.replace(b"\n", b"\r\n"), mailbox="test", source_id="t")


def test_rfc3464_dsn_fields() -> None:
    result = classify(parse(DSN_MAIL), OWN)
    assert result.kind == "bounce"
    assert "Content-Type: multipart/report; report-type=delivery-status" in result.reasons
    assert result.dsn == Dsn(
        action="failed",
        status="5.1.1",
        final_recipient="gone.user@example.org",
        original_message_id="orig-42@mailfiler.ours.example",
        diagnostic="550 5.1.1 <gone.user@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
    )
    assert result.dsn.permanent


def test_delay_dsn_is_a_bounce_with_action_delayed() -> None:
    raw = (
        DSN_MAIL.replace(b"Action: failed", b"Action: delayed")
        .replace(b"Status: 5.1.1", b"Status: 4.4.7")
        .replace(b"Undelivered Mail Returned to Sender", b"Delayed Mail (still being retried)")
    )
    result = classify(parse(raw), OWN)
    assert result.kind == "bounce"
    assert result.dsn is not None
    assert (result.dsn.action, result.dsn.status) == ("delayed", "4.4.7")
    assert not result.dsn.permanent


def test_rfc822_headers_part_gives_the_original_id() -> None:
    raw = DSN_MAIL.replace(b"Content-Type: message/rfc822", b"Content-Type: text/rfc822-headers")
    result = classify(parse(raw), OWN)
    assert result.dsn is not None
    assert result.dsn.original_message_id == "orig-42@mailfiler.ours.example"


def test_base64_delivery_status_part() -> None:
    import base64

    fields = b"Reporting-MTA: dns; mx\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\n"
    fields += b"Action: failed\r\nStatus: 5.2.2\r\n"
    raw = DSN_MAIL.replace(
        DSN_MAIL[
            DSN_MAIL.index(b"Content-Type: message/delivery-status") : DSN_MAIL.index(
                b"--BOUNDARY\nContent-Type: message/rfc822"
            )
        ],
        b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
        + base64.b64encode(fields)
        + b"\n\n",
    )
    dsn = classify(parse(raw), OWN).dsn
    assert dsn is not None
    assert (dsn.status, dsn.final_recipient) == ("5.2.2", "a@b.example")


def test_generic_status_is_refined_by_the_diagnostic() -> None:
    raw = DSN_MAIL.replace(b"Status: 5.1.1", b"Status: 5.0.0").replace(
        b"550 5.1.1 <gone", b"550 5.7.1 <gone"
    )
    dsn = classify(parse(raw), OWN).dsn
    assert dsn is not None
    assert dsn.status == "5.7.1"


def test_diagnostic_is_truncated() -> None:
    raw = DSN_MAIL.replace(b"in virtual mailbox table", b"x" * 2000)
    dsn = classify(parse(raw), OWN).dsn
    assert dsn is not None
    assert dsn.diagnostic is not None
    assert len(dsn.diagnostic) == 500


QMAIL = """\
Hi. This is the qmail-send program at mx.example.jp.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<neko@example.co.jp>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <neko@example.co.jp>... User Unknown
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

Return-Path: <jane@ours.example>
Message-ID: <orig-7@ours.example>
From: Jane <jane@ours.example>
To: other@example.org
Subject: Budget

Hello 5.2.2 other@example.org
"""


def test_qmail_bounce_status_and_recipient_from_text() -> None:
    msg = mail(
        "From: MAILER-DAEMON@mx.example.jp\nTo: jane@ours.example\nReturn-Path: <>\n"
        "Subject: failure notice",
        QMAIL,
    )
    result = classify(msg, OWN)
    assert result.kind == "bounce"
    assert result.dsn == Dsn(
        action="failed",
        status="5.1.1",
        final_recipient="neko@example.co.jp",
        original_message_id="orig-7@ours.example",
        diagnostic="Remote host said: 550 5.1.1 <neko@example.co.jp>... User Unknown",
    )


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("<a@example.org>:\nSorry, no mailbox here by that name. User unknown\n", "5.1.1"),
        ("<a@example.org>:\nThe user's mailbox is full\n", "5.2.2"),
        ("<a@example.org>:\nmessage rejected: quota exceeded\n", "5.2.2"),
        ("<a@example.org>:\nRemote host said: 554 Transaction failed\n", "5.0.0"),
        ("<a@example.org>:\nSMTP error (#5.4.4)\n", "5.4.4"),
        ("<a@example.org>:\nHost or domain name not found\n", "5.1.2"),
    ],
)
def test_status_inferred_from_words(text: str, status: str) -> None:
    body = "This message was created automatically by mail delivery software.\n\n" + text
    msg = mail("From: Mail Delivery System <Mailer-Daemon@mx.example>\nReturn-Path: <>", body)
    result = classify(msg, OWN)
    assert result.kind == "bounce"
    assert result.dsn is not None
    assert (result.dsn.status, result.dsn.final_recipient) == (status, "a@example.org")
    assert result.dsn.permanent


def test_x_failed_recipients_gives_the_recipient() -> None:
    msg = mail(
        "From: Mail Delivery System <Mailer-Daemon@mx.example>\n"
        "X-Failed-Recipients: Gone@Example.NET, other@example.net\n"
        "Subject: Mail delivery failed: returning message to sender",
        "A message that you sent could not be delivered.\n",
    )
    dsn = classify(msg, OWN).dsn
    assert dsn is not None
    assert dsn.final_recipient == "gone@example.net"
    assert dsn.action == "failed"
    assert dsn.status is None
    assert dsn.permanent  # failed, and no status says otherwise


def test_original_id_from_headers() -> None:
    msg = mail(
        "From: postmaster@corp.example\nSubject: Undeliverable: x\n"
        "X-Original-Message-ID: <orig-9@ours.example>"
    )
    dsn = classify(msg, OWN).dsn
    assert dsn is not None
    assert dsn.original_message_id == "orig-9@ours.example"


@pytest.mark.parametrize("domain", ["почта.example", "例え.jp", "mx.example"])
def test_the_returned_originals_utf8_message_id_is_read_whole(domain: str) -> None:
    """RFC 6532 ids after the @ (in a message/rfc822 part and in text/rfc822-headers)."""
    for kind in ("message/rfc822", "text/rfc822-headers"):
        raw = (
            "From: MAILER-DAEMON@mx.example\r\nTo: a@b.example\r\nSubject: Undelivered Mail\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;"
            " boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--XX\r\n"
            f"Content-Type: {kind}\r\n\r\nMessage-ID: <c4.m4@{domain}>\r\nSubject: hi\r\n\r\n"
            "body\r\n--XX--\r\n"
        ).encode()
        dsn = classify(parse_message(raw, mailbox="m", source_id="1"), OWN).dsn
        assert dsn is not None and dsn.original_message_id == f"c4.m4@{domain}", kind


def test_arf_feedback_report_is_not_a_bounce() -> None:
    raw = b"""\
From: feedbackloop@isp.example
To: abuse@ours.example
Subject: Email Feedback Report for IP 192.0.2.1
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="part"

--part
Content-Type: text/plain

This is an email abuse report.
--part
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1

--part
Content-Type: message/rfc822

From: jane@ours.example
Message-ID: <orig@ours.example>

Spam?
--part--
"""
    result = classify(parse(raw), OWN)
    assert result.kind == "feedback"
    assert "message/feedback-report part" in result.reasons
    assert result.dsn is None


# --- robustness --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n"
        b"Content-Type: message/delivery-status\r\n\r\n\x00\xff: :\r\n\r\n--x",
        b"Content-Type: message/delivery-status\r\n\r\nStatus: 9.9.9\r\nAction: exploded\r\n",
        b"From: <>\r\nSubject: Undeliverable: \xff\xfe\r\n\r\n" + b"550 " * 50_000,
        b"Content-Type: multipart/report; boundary=x\r\n\r\n"
        + b"--x\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n" * 100,
    ],
)
def test_never_raises(raw: bytes) -> None:
    result = classify(parse_message(raw, mailbox="test", source_id="t"), OWN)
    assert result.kind in {"human", "auto_reply", "bounce", "feedback", "bulk", "own_loop"}
    if result.dsn is not None:
        assert result.dsn.status is None or result.dsn.status[0] in "245"
        assert result.dsn.action in {None, "failed", "delayed", "delivered", "relayed", "expanded"}


def test_campaign_headers_start_with_the_letters_the_bulk_rule_looks_at() -> None:
    # `_bulk` tries `_ESP_HEADER` only on names starting with one of `_ESP_FIRST`: no other
    # first character lets it match (every alternative starts with x- or feedback-id).
    pattern = classify_module._ESP_HEADER
    for rest in ("-mc-user", "eedback-id"):
        starts = {chr(c) for c in range(0x110000) if pattern.match(chr(c) + rest)}
        assert starts <= classify_module._ESP_FIRST, rest
        assert starts, rest


# Header lines the rules read, with values that do and do not make a sign.
SIGN_HEADERS = [
    "Auto-Submitted: auto-replied",
    "Auto-Submitted: auto-generated",
    "Auto-Submitted: no",
    "X-Autoreply: yes",
    "X-Autorespond: 0",
    "X-Autoresponder: true",
    "X-Auto-Reply: on",
    "Precedence: auto_reply",
    "Precedence: bulk",
    "X-MS-Exchange-Inbox-Rules-Loop: filer@ours.example",
    "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent",
    "X-Apple-Action: VACATION",
    "Feedback-Type: abuse",
    "X-Abuse-Report: yes",
    "X-ARF: yes",
    "X-Apple-Unsubscribe: true",
    "List-Id: <team.lists.example>",
    "List-Unsubscribe: <mailto:leave@lists.example>",
    "X-Failed-Recipients: gone@person.example",
    "Return-Path: <>",
    "X-Mailer: Vacation 1.0",
    "X-Auto-Response-Suppress: All",
]


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    st.lists(st.sampled_from(SIGN_HEADERS), max_size=4, unique=True),
    st.sampled_from(["Lunch on Friday", "Out of office", "Automatic reply: away"]),
)
def test_rules_that_skip_absent_headers_decide_as_if_they_had_looked(
    headers: list[str], subject: str
) -> None:
    # The headers added make `_auto_reply` and `_feedback` read their headers (a name of each
    # rule's set is present) and are no sign themselves: a header the rule reads but left out
    # of its set would classify the two messages differently.
    lines = "\n".join([*headers, f"Subject: {subject}"])
    plain = classify(mail(lines), OWN)
    looked = classify(mail(lines + "\nX-Apple-Action: none\nX-Apple-Unsubscribe: false"), OWN)
    assert (looked.kind, looked.reasons) == (plain.kind, plain.reasons)
