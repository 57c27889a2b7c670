"""parse_message on mail written for these tests: one behaviour per test."""

from __future__ import annotations

import base64
import hashlib
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest

from shared.core import html_text, mime
from shared.core.message import Address, MailMessage, fallback_key, id_key
from shared.core.mime import MAX_REFERENCES, parse_message

RECEIVED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def mail(*headers: str, body: str | bytes = "Hello\r\n") -> bytes:
    """A raw mail with CRLF line ends; headers are written as given."""
    head = "".join(f"{h}\r\n" for h in headers).encode("utf-8")
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    return head + b"\r\n" + data


def parse(raw: bytes, **kwargs: Any) -> MailMessage:
    return parse_message(raw, mailbox="inbox@example.com", source_id="src-1", **kwargs)


BASIC = mail(
    "Message-ID: <abc@example.com>",
    "Date: Tue, 07 May 2024 10:11:12 +0200",
    'From: "Alice Example" <Alice@Example.COM>',
    "To: bob@example.org, Carol <carol@EXAMPLE.org>",
    "Subject: Re: Quarterly numbers",
)


# --- identity, addresses, dates --------------------------------------------------------------


def test_basic_fields() -> None:
    msg = parse(BASIC, folder="Inbox", flags=["\\Seen"], categories=["Red"], conversation_id="c1")
    assert msg.message_id == "abc@example.com"
    assert msg.key == id_key("abc@example.com")
    assert msg.subject == "Re: Quarterly numbers"
    assert msg.normalized_subject == "Quarterly numbers"
    assert msg.from_ == Address("Alice@example.com", "Alice Example")
    assert msg.to == (Address("bob@example.org"), Address("carol@example.org", "Carol"))
    assert msg.date == datetime(2024, 5, 7, 10, 11, 12, tzinfo=timezone(timedelta(hours=2)))
    assert msg.text == "Hello\n"
    assert msg.size == len(BASIC)
    assert msg.raw is BASIC or msg.raw == BASIC
    assert msg.flags == frozenset({"\\Seen"})
    assert msg.categories == ("Red",)
    assert (msg.folder, msg.conversation_id, msg.mailbox, msg.source_id) == (
        "Inbox",
        "c1",
        "inbox@example.com",
        "src-1",
    )
    assert msg.defects == ()


def test_headers_in_order_and_decoded() -> None:
    raw = mail(
        "X-First: 1",
        "Subject: =?utf-8?q?caf=C3=A9?=",
        "X-Folded: part one",
        "\tpart two",
        "X-First: 2",
    )
    msg = parse(raw)
    assert msg.headers == (
        ("X-First", "1"),
        ("Subject", "café"),
        ("X-Folded", "part one\tpart two"),
        ("X-First", "2"),
    )
    assert msg.header("x-first") == "1"
    assert msg.header_all("X-FIRST") == ("1", "2")


def test_outlook_bracket_message_id_that_crashes_stdlib() -> None:
    raw = mail("Message-ID: <[abc.def]@host.example>", "Subject: x")
    with pytest.raises(IndexError):
        _ = BytesParser(policy=policy.default).parsebytes(raw)["message-id"]
    msg = parse(raw)
    assert msg.message_id == "[abc.def]@host.example"
    assert msg.key == id_key("[abc.def]@host.example")


@pytest.mark.parametrize("value", ["", "   ", "<>"])
def test_empty_message_id_is_none(value: str) -> None:
    msg = parse(mail(f"Message-ID: {value}", "Subject: s"))
    assert msg.message_id is None
    assert msg.key.startswith("s")


def test_message_id_without_brackets() -> None:
    assert parse(mail("Message-Id: bare@host")).message_id == "bare@host"


def test_missing_message_id_fallback_key_is_stable_and_body_sensitive() -> None:
    raw = mail("From: a@example.com", "Subject: s", body="one")
    first = parse(raw)
    again = parse(mail("From: a@example.com", "Subject: s", body="one"))
    other = parse(mail("From: a@example.com", "Subject: s", body="two"))
    assert first.message_id is None
    assert first.key == again.key == fallback_key(raw) == "s" + hashlib.sha256(raw).hexdigest()
    assert first.key != other.key
    assert "message-id-missing" in first.defects


def test_mails_without_message_id_that_read_the_same_never_share_a_key() -> None:
    # Same From, Date, Subject and text: only a header the parser does not read differs.
    head = (
        "From: Пётр <petr@example.com>",
        "Date: Tue, 07 May 2024 10:11:12 +0200",
        "Subject: 你好",
    )
    one = parse(mail(*head, "X-Trace: 1", body="тот же текст"))
    two = parse(mail(*head, "X-Trace: 2", body="тот же текст"))
    assert (one.subject, one.text, one.from_) == (two.subject, two.text, two.from_)
    assert one.key != two.key


def test_in_reply_to_and_references_are_tolerant() -> None:
    raw = mail(
        "In-Reply-To: <p1@x> (message from Bob on Monday)",
        "References: <r1@x>\t<r2@x>,<r3@x> junk <p1@x> <r2@x>",
    )
    msg = parse(raw)
    assert msg.in_reply_to == ("p1@x",)
    assert msg.references == ("r1@x", "r2@x", "r3@x", "p1@x")
    assert parse(mail("In-Reply-To: bare@x")).in_reply_to == ("bare@x",)


def test_long_references_keep_root_and_last_32() -> None:
    ids = [f"id{i}@example.com" for i in range(100)]
    refs = "\r\n ".join(f"<{i}>" for i in ids)
    msg = parse(mail(f"References: {refs}"))
    assert len(msg.references) == MAX_REFERENCES + 1 == 33
    assert msg.references[0] == "id0@example.com"
    assert msg.references[1:] == tuple(ids[-MAX_REFERENCES:])


def test_references_at_the_limit_are_untouched() -> None:
    ids = [f"{i}@x" for i in range(MAX_REFERENCES)]
    msg = parse(mail("References: " + " ".join(f"<{i}>" for i in ids)))
    assert msg.references == tuple(ids)


def test_malformed_cc_that_crashes_stdlib() -> None:
    raw = mail('Cc: dave@Example.NET, "', "Subject: x")
    with pytest.raises(IndexError):
        _ = BytesParser(policy=policy.default).parsebytes(raw)["cc"].addresses
    assert parse(raw).cc == (Address("dave@example.net"),)


def test_address_rules() -> None:
    raw = mail(
        "From: =?utf-8?q?Doe=2C_J=C3=B6rg?= <Joerg.Doe@Example.DE>",
        "To: Undisclosed recipients:;",
        "Cc: team: Ann <ann@X.org>, ben@Y.org;, nobody-here",
        "Reply-To: local-only",
        "Sender: =?iso-8859-1?q?Andr=E9?= <andre@x.fr>",
    )
    msg = parse(raw)
    assert msg.from_ == Address("Joerg.Doe@example.de", "Doe, Jörg")
    assert msg.to == ()
    assert msg.cc == (Address("ann@x.org", "Ann"), Address("ben@y.org"))
    assert msg.reply_to == () and "address-invalid" in msg.defects  # no '@': not an address
    assert msg.sender == Address("andre@x.fr", "André")


def test_naive_date_becomes_utc() -> None:
    msg = parse(mail("Date: Tue, 07 May 2024 10:11:12"))
    assert msg.date == datetime(2024, 5, 7, 10, 11, 12, tzinfo=UTC)
    assert "date-naive" in msg.defects


def test_missing_date_uses_received_at() -> None:
    msg = parse(mail("Subject: s"), received_at=RECEIVED)
    assert msg.date == RECEIVED
    assert "date-missing" in msg.defects
    assert parse(mail("Subject: s")).date is None


def test_unparsable_date_uses_received_at_made_aware() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    msg = parse(mail("Date: the day after tomorrow"), received_at=naive)
    assert msg.date == naive.replace(tzinfo=UTC)
    assert msg.date is not None and msg.date.tzinfo is not None
    assert "date-unparsable" in msg.defects


# --- subjects and RFC 2047 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        ("=?utf-8?B?0J/RgNC40LLQtdGC?=", "Привет"),
        ("Re: =?iso-8859-1?q?caf=E9?= and =?utf-8?b?w6k=?= mixed", "Re: café and é mixed"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # whitespace between words is dropped
        ("=?utf-8?b?4oK=?= =?utf-8?b?rA==?=", "€"),  # a character split across two words
        ("=?utf-8?b?4oKs?=", "€"),  # B text with missing padding handled too
        ("=?utf-8*en?q?hi?=", "hi"),  # RFC 2231 language tag
        ("=?x-foo?q?plain?=", "plain"),
        ("=?utf-8?q?broken", "=?utf-8?q?broken"),
        ("Long subject\r\n  folded   over lines", "Long subject folded over lines"),
    ],
)
def test_subject_decoding(header: str, expected: str) -> None:
    assert parse(mail(f"Subject: {header}")).subject == expected


def test_raw_utf8_and_latin1_header_bytes() -> None:
    raw = b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nX-Old: caf\xe9\r\n\r\nbody"
    msg = parse(raw)
    assert msg.subject == "Grüße"
    assert msg.header("X-Old") == "café"


# --- bodies and charsets ---------------------------------------------------------------------

ALTERNATIVE = mail(
    "MIME-Version: 1.0",
    'Content-Type: multipart/alternative; boundary="alt"',
    body=(
        "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain text\r\nline two\r\n"
        "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML <b>text</b></p>\r\n"
        "--alt--\r\n"
    ),
)


def test_multipart_alternative_prefers_plain() -> None:
    msg = parse(ALTERNATIVE)
    assert msg.text == "Plain text\nline two"
    assert msg.attachments == ()


def test_html_only_is_converted_without_links_or_images() -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<p>Dear <b>Bob</b>,</p><p>see <a href='https://x.example/a'>the report</a>"
        "<img src='cid:logo' alt='LOGO'></p><blockquote>old - 1. text</blockquote>"
        "</body></html>"
    )
    msg = parse(mail("Content-Type: text/html; charset=utf-8", body=html))
    assert "Dear Bob," in msg.text
    assert "see the report" in msg.text
    assert "https://" not in msg.text and "LOGO" not in msg.text and "color" not in msg.text
    assert "> old - 1. text" in msg.text  # no Markdown escaping like "1\\."


def test_html_fallback_when_html2text_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(markup: str) -> str:
        raise AssertionError("html2text choked")

    monkeypatch.setattr(html_text, "_with_html2text", boom)
    msg = parse(mail("Content-Type: text/html", body="<p>One</p><p>Two &amp; three</p>"))
    assert msg.text.split() == ["One", "Two", "&", "three"]
    assert "html-html2text-failed:AssertionError" in msg.defects


def test_html_to_text_regex_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(markup: str) -> str:
        raise ValueError

    monkeypatch.setattr(html_text, "_with_html2text", boom)
    monkeypatch.setattr(html_text, "_with_stdlib", boom)
    notes: list[str] = []
    assert html_text.html_to_text("<i>a</i>&lt;b<p>c", notes) == "a<b\nc"
    assert len(notes) == 2


def test_huge_html_skips_html2text() -> None:
    markup = "<p>x</p>" * (html_text.MAX_HTML2TEXT_CHARS // 8 + 1)
    notes: list[str] = []
    text = html_text.html_to_text(markup, notes)
    assert notes == ["html-too-large-for-html2text"]
    assert text.startswith("x\nx") or text.startswith("x\n\nx")


def test_html_table_cells_are_separated() -> None:
    text = html_text.html_to_text("<table><tr><td>Total</td><td>42 EUR</td></tr></table>")
    assert text == "Total 42 EUR"


def test_html_outlook_conditionals_and_stray_brackets() -> None:
    markup = "<p>1 < 2</p><!--[if mso]><xml>o</xml><![endif]--><![if !vml]>shown<![endif]>"
    assert html_text.html_to_text(markup).split() == ["1", "<", "2", "shown"]


@pytest.mark.parametrize("unit", ["<!", "<a ", "<!-- >", "<![x>", "</"])
def test_html_unterminated_markup_is_kept_as_text(unit: str) -> None:
    # html.parser rescans each of these to the end of the document: quadratic if not defused.
    text = html_text.html_to_text(unit * 100_000)
    assert text.replace(" ", "").startswith(unit.replace(" ", "") * 3)


def test_line_endings_are_normalised() -> None:
    assert parse(mail(body=b"a\r\nb\rc\nd")).text == "a\nb\nc\nd"


def test_declared_utf8_but_latin1_bytes() -> None:
    raw = mail("Content-Type: text/plain; charset=utf-8", body=b"Gr\xfc\xdfe, caf\xe9 \x80")
    msg = parse(raw)
    assert msg.text == "Grüße, café €"
    assert "charset-mismatch:utf-8" in msg.defects


def test_unknown_charset_falls_back_to_utf8() -> None:
    raw = mail('Content-Type: text/plain; charset="x-foo"', body="naïve".encode())
    msg = parse(raw)
    assert msg.text == "naïve"
    assert "unknown-charset:x-foo" in msg.defects


@pytest.mark.parametrize(
    ("charset", "text", "codec"),
    [
        ("ks_c_5601-1987", "안녕하세요", "cp949"),
        ("windows-874", "สวัสดี", "cp874"),
        ("unicode-1-1-utf-7", "Grüße", "utf-7"),
        ("iso-8859-1", "“quoted”", "cp1252"),
        ("x-unknown", "déjà", "utf-8"),
        ("gb2312", "发票", "gbk"),
    ],
)
def test_charset_aliases(charset: str, text: str, codec: str) -> None:
    raw = mail(f"Content-Type: text/plain; charset={charset}", body=text.encode(codec))
    assert parse(raw).text == text


def test_base64_body_and_quoted_printable() -> None:
    b64 = base64.b64encode("Grüße\r\n".encode()).decode()
    raw = mail(
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        body=b64,
    )
    assert parse(raw).text == "Grüße\n"
    qp = mail(
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: quoted-printable",
        body="caf=E9 =\r\nsoft",
    )
    assert parse(qp).text == "café soft"


def test_utf7_lone_surrogate_is_replaced() -> None:
    msg = parse(mail("Content-Type: text/plain; charset=utf-7", body=b"a+2D0-b"))
    msg.text.encode("utf-8")  # would raise on a lone surrogate
    assert msg.text.startswith("a") and msg.text.endswith("b")


# --- attachments -----------------------------------------------------------------------------


def multipart(*parts: str, kind: str = "mixed") -> bytes:
    body = "".join(f"--b0\r\n{p}\r\n" for p in parts) + "--b0--\r\n"
    return mail("MIME-Version: 1.0", f'Content-Type: multipart/{kind}; boundary="b0"', body=body)


TEXT_PART = "Content-Type: text/plain\r\n\r\nSee attached."


def test_rfc2231_and_rfc2047_filenames() -> None:
    raw = multipart(
        TEXT_PART,
        "Content-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*0*=utf-8''r%C3%A9sum; filename*1*=%C3%A9.pdf"
        "\r\n\r\nAAAA",
        "Content-Type: application/pdf; name*=utf-8''%E2%82%AC-invoice.pdf\r\n\r\nBBBB",
        'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="'
        '=?utf-8?B?w5xiZXJzaWNodC54bHN4?="\r\n\r\nCCCC',
        'Content-Type: text/csv; name="=?iso-8859-1?q?d=E9tail.csv?="\r\n\r\na,b',
    )
    msg = parse(raw)
    assert msg.text == "See attached."
    names = [a.filename for a in msg.attachments]
    assert names == ["résumé.pdf", "€-invoice.pdf", "Übersicht.xlsx", "détail.csv"]
    assert [a.content_type for a in msg.attachments] == [
        "application/pdf",
        "application/pdf",
        "application/octet-stream",
        "text/csv",
    ]


def test_bare_name_star_that_crashes_parsebytes() -> None:
    raw = multipart(
        TEXT_PART,
        "Content-Type: application/pdf; name*\r\nContent-Disposition: attachment; filename*"
        "\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=",
    )
    with pytest.raises(IndexError):
        BytesParser(policy=policy.default).parsebytes(raw)
    msg = parse(raw)
    assert msg.text == "See attached."
    assert len(msg.attachments) == 1
    att = msg.attachments[0]
    assert (att.filename, att.content_type, att.size) == (None, "application/pdf", 5)
    assert not any(d.startswith("parse-failed") for d in msg.defects)  # compat32 copes


def test_inline_image_with_content_id() -> None:
    png = base64.b64encode(b"\x89PNG" + b"\x00" * 96).decode()
    raw = multipart(
        "Content-Type: text/html\r\n\r\n<p>Logo: <img src='cid:logo1@x'></p>",
        f"Content-Type: image/png\r\nContent-ID: <logo1@x>\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{png}",
        "Content-Type: image/gif\r\nContent-Disposition: inline\r\n\r\nGIF89a",
        "Content-Type: image/jpeg\r\nContent-Disposition: attachment; filename=a.jpg\r\n"
        "Content-ID: <c3>\r\n\r\nJJ",
        kind="related",
    )
    msg = parse(raw)
    assert msg.text == "Logo:"
    png_att, gif_att, jpg_att = msg.attachments
    assert (png_att.content_type, png_att.size, png_att.content_id, png_att.inline) == (
        "image/png",
        100,
        "logo1@x",
        True,
    )
    assert (gif_att.inline, gif_att.content_id, gif_att.filename) == (True, None, None)
    assert (jpg_att.inline, jpg_att.content_id, jpg_att.filename) == (False, "c3", "a.jpg")


def test_text_attachment_is_not_the_body() -> None:
    raw = multipart(
        "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=notes.txt"
        "\r\n\r\nattached notes",
        "Content-Type: text/plain\r\n\r\nreal body",
    )
    msg = parse(raw)
    assert msg.text == "real body"
    assert [(a.filename, a.size) for a in msg.attachments] == [("notes.txt", 14)]


def test_message_rfc822_is_an_attachment_and_not_merged() -> None:
    inner = (
        "From: x@example.com\r\nSubject: inner subject\r\nMessage-ID: <inner@x>\r\n\r\n"
        "INNER BODY TEXT\r\n"
    )
    raw = multipart(
        "Content-Type: text/plain\r\n\r\nForwarding this.",
        f"Content-Type: message/rfc822\r\n\r\n{inner}",
    )
    msg = parse(raw)
    assert msg.text == "Forwarding this."
    assert "INNER" not in msg.text
    assert msg.message_id is None  # the inner Message-ID is not ours
    (att,) = msg.attachments
    assert att.content_type == "message/rfc822"
    assert att.size == len(inner.encode())


def test_huge_attachment_size() -> None:
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    encoded = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    raw = multipart(
        TEXT_PART,
        "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        f"filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}",
    )
    msg = parse(raw)
    assert len(raw) > 6_000_000
    assert msg.size == len(raw)
    assert msg.raw == raw
    assert [(a.filename, a.size) for a in msg.attachments] == [("big.bin", 5 * 1024 * 1024)]
    assert msg.text == "See attached."


def test_multipart_without_boundary_keeps_text() -> None:
    raw = mail("Content-Type: multipart/mixed", body="just text")
    msg = parse(raw)
    assert msg.text == "just text"
    assert "multipart-without-parts" in msg.defects


def test_deep_nesting_is_cut() -> None:
    depth = mime.MAX_DEPTH + 10
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth)
    )
    closing = "".join(f"\r\n--b{i}--" for i in reversed(range(depth)))
    raw = b"MIME-Version: 1.0\r\n" + (opening + TEXT_PART + closing).encode()
    msg = parse(raw)
    assert "too-deep" in msg.defects
    assert msg.text == ""


def _nested(depth: int, *headers: str, text: str = "hello") -> bytes:
    """A mail whose text part sits under `depth` nested multiparts."""
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth)
    )
    closing = "".join(f"\r\n--b{i}--" for i in reversed(range(depth)))
    body = opening + f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}" + closing
    head = "".join(f"{h}\r\n" for h in (*headers, "MIME-Version: 1.0"))
    return (head + body).encode("utf-8")


def test_mail_too_deep_for_the_parser_keeps_its_top_level_headers() -> None:
    # 1,100 nested multiparts exhaust the stdlib parser's recursion: the body is lost to it,
    # the headers are not.
    raw = _nested(
        1_100,
        "Message-ID: <deep-1@example.com>",
        "Date: Tue, 07 May 2024 10:11:12 +0200",
        "From: =?utf-8?b?0JjQstCw0L0g0J/QtdGC0YDQvtCy?= <ivan@example.ru>",
        "To: 山田 <yamada@example.jp>",
        "Cc: Ἀριστοτέλης <aristo@example.gr>",
        "Subject: =?utf-8?b?5pif44Gu5LiL44Gn?= [CASE-7]",
        "In-Reply-To: <parent@example.com>",
        "References: <root@example.com> <parent@example.com>",
    )
    msg = parse(raw)
    assert "parser-failed:RecursionError" in msg.defects
    assert msg.message_id == "deep-1@example.com" and msg.key == id_key("deep-1@example.com")
    assert msg.from_ == Address("ivan@example.ru", "Иван Петров")
    assert msg.to == (Address("yamada@example.jp", "山田"),)
    assert msg.cc == (Address("aristo@example.gr", "Ἀριστοτέλης"),)
    assert msg.subject == "星の下で [CASE-7]"
    assert msg.date == datetime(2024, 5, 7, 10, 11, 12, tzinfo=timezone(timedelta(hours=2)))
    assert msg.in_reply_to == ("parent@example.com",)
    assert msg.references == ("root@example.com", "parent@example.com")
    assert msg.header("MIME-Version") == "1.0"
    assert (msg.text, msg.attachments, msg.raw) == ("", (), raw)


def test_distinct_mails_too_deep_for_the_parser_never_share_a_key() -> None:
    one = parse(_nested(1_100, "From: a@example.com", "Subject: один", text="раз"))
    two = parse(_nested(1_100, "From: a@example.com", "Subject: один", text="два"))
    assert "parser-failed:RecursionError" in one.defects
    assert one.subject == two.subject == "один"
    assert one.key != two.key
    assert one.key == fallback_key(one.raw) and two.key == fallback_key(two.raw)


def test_huge_subject_is_cut_between_whole_characters() -> None:
    # 8 MB of Cyrillic, CJK and emoji with skin tones and combining accents: the cut falls
    # inside a cluster wherever it lands.
    unit = "Привет 世界 👍🏽 é " + "e\u0301"
    subject = unit * (8_000_000 // len(unit.encode("utf-8")))
    raw = mail("Message-ID: <big-subject@example.com>", f"Subject: {subject}", body="text")
    msg = parse(raw)
    assert "subject-truncated" in msg.defects
    assert len(msg.subject) <= mime.MAX_SUBJECT_CHARS
    assert msg.subject.endswith("…")
    kept = msg.subject[:-1]
    assert " ".join(subject.split()).startswith(kept)
    assert not unicodedata.combining(kept[-1]) and kept[-1] not in "\U0001f3fd\u200d"
    kept.encode("utf-8")
    kept.encode("utf-16")  # strict: no half surrogate pair
    assert all(len(value) <= mime.MAX_HEADER_CHARS for _, value in msg.headers)
    assert msg.raw == raw and msg.text == "text"


def test_huge_address_lists_are_bounded() -> None:
    many = ", ".join(f"Имя {i} <u{i}@example.com>" for i in range(mime.MAX_ADDRESSES + 50))
    long_address = "x" * 400 + "@example.com"
    msg = parse(
        mail(f"To: {many}", f"Cc: {long_address}, ok@example.com", f"From: {'名' * 5000} <a@b.c>")
    )
    assert len(msg.to) == mime.MAX_ADDRESSES and "too-many-addresses" in msg.defects
    assert msg.cc == (Address("ok@example.com"),) and "address-too-long" in msg.defects
    assert msg.from_ is not None and len(msg.from_.name) <= mime.MAX_NAME_CHARS
    assert msg.from_.name.startswith("名名") and msg.from_.email == "a@b.c"


# --- degenerate input ------------------------------------------------------------------------


def test_empty_bytes() -> None:
    msg = parse(b"", received_at=RECEIVED)
    assert (msg.raw, msg.size, msg.text, msg.subject, msg.message_id) == (b"", 0, "", "", None)
    assert msg.key == fallback_key(b"")
    assert msg.date == RECEIVED


def test_garbage_bytes() -> None:
    raw = bytes(range(256)) * 8 + b"\xff\xfe\x00:\r\n\r\n\x00"
    msg = parse(raw)
    assert msg.raw == raw and msg.size == len(raw)
    assert msg.key.startswith("s") and len(msg.key) == 65
    msg.text.encode("utf-8")


def test_internal_error_still_returns_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(mime, "_parse", boom)
    msg = parse(b"Subject: x\r\n\r\nbody", received_at=RECEIVED, flags=["a"])
    assert msg.defects == ("parser-failed:RuntimeError",)
    assert msg.raw == b"Subject: x\r\n\r\nbody"
    assert msg.date == RECEIVED and msg.flags == frozenset({"a"})
