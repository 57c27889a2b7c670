"""Composing outbound mail safely, and RFC 3834's rules for automatic answers."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import compat32, default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.outbound import (
    Attachment,
    Draft,
    Limits,
    OutboundError,
    check_address,
    check_wire,
    compose,
    over_limit,
    refusal,
    render,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def draft(**changes: object) -> Draft:
    values: dict[str, object] = {
        "sender": "support@example.com",
        "sender_name": "Support",
        "to": ("ann@example.org",),
        "subject": "[CASE-7] Printer on fire",
        "body": "We have your message.\n",
        "message_id": "mf.case.0123456789abcdef.n1.0123456789abcdef0123@mailfiler.invalid",
        "date": NOW,
        "in_reply_to": "orig@example.org",
        "references": ("root@example.org", "orig@example.org"),
        "automatic": True,
    }
    values.update(changes)
    return Draft(**values)  # type: ignore[arg-type]


def test_an_automatic_reply_threads_and_says_it_is_automatic() -> None:
    parsed = message_from_bytes(compose(draft(), 1_000_000), policy=default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed["In-Reply-To"] == "<orig@example.org>"
    assert parsed["References"] == "<root@example.org> <orig@example.org>"
    assert parsed["From"] == "Support <support@example.com>"
    assert parsed.get_content().strip() == "We have your message."
    plain = compose(draft(automatic=False), 1_000_000)
    assert b"Auto-Submitted" not in plain


@given(st.sampled_from(["\r", "\n", "\r\n", "\x00"]), st.text(max_size=20))
def test_line_breaks_in_any_header_value_are_refused(breaker: str, tail: str) -> None:
    for field in ("subject", "sender_name"):
        with pytest.raises(OutboundError, match=r"header injection|NUL"):
            compose(draft(**{field: f"Hi{breaker}Bcc: victim@example.net{tail}"}), 10**6)
    with pytest.raises(OutboundError):
        compose(draft(to=(f"ann@example.org{breaker}Bcc: x@example.net",)), 10**6)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ann",
        "ann@",
        "@example.org",
        "ann@localhost",
        "a b@example.org",
        "a@ex ample.org",
        "ann@example.org, bob@example.org",
        "ann@exa_mple.org",
    ],
)
def test_invalid_addresses_are_refused(value: str) -> None:
    with pytest.raises(OutboundError):
        check_address(value)


def test_valid_addresses_pass_with_the_domain_lower_cased() -> None:
    assert check_address("Ann <Ann@Example.ORG>") == "Ann@example.org"
    assert check_address("ann+case@example.org") == "ann+case@example.org"


def test_size_limit_is_a_clear_error() -> None:
    with pytest.raises(OutboundError, match="the limit is 100"):
        compose(draft(body="x" * 1000), 100)


def test_templates_fill_known_values_and_keep_the_rest() -> None:
    assert render("[$token] ${subject} $unknown", {"token": "CASE-7", "subject": "Hi"}) == (
        "[CASE-7] Hi $unknown"
    )


@pytest.mark.parametrize(
    ("headers", "to", "kind", "why"),
    [
        ({"Auto-Submitted": "auto-replied"}, "ann@example.org", "human", "Auto-Submitted"),
        ({"Precedence": "bulk"}, "ann@example.org", "human", "Precedence"),
        ({"List-Id": "<l.example.org>"}, "ann@example.org", "human", "mailing list"),
        ({}, "no-reply@example.org", "human", "no-reply"),
        ({}, "MAILER-DAEMON@example.org", "human", "no-reply"),
        ({}, "support@example.com", "human", "our own"),
        ({}, "ann@example.org", "auto_reply", "auto reply"),
        ({}, "ann@example.org", "bounce", "bounce"),
    ],
)
def test_rfc_3834_never_answers_machines(
    headers: dict[str, str], to: str, kind: str, why: str
) -> None:
    found = refusal(to, headers, {"support@example.com"}, kind)
    assert found is not None and why in found


def test_a_person_is_answered() -> None:
    assert refusal("ann@example.org", {"Auto-Submitted": "no"}, {"support@example.com"}) is None


def test_per_recipient_limits_count_the_window_and_the_day() -> None:
    limits = Limits(window_minutes=180, per_window=3, per_day=5)
    assert over_limit([NOW - timedelta(minutes=m) for m in (1, 2)], NOW, limits) is None
    window = over_limit([NOW - timedelta(minutes=m) for m in (1, 2, 3)], NOW, limits)
    assert window is not None and "180 minutes" in window
    day = [NOW - timedelta(hours=h) for h in (4, 5, 6, 7, 8)]
    found = over_limit(day, NOW, limits)
    assert found is not None and "a day" in found
    assert over_limit([NOW - timedelta(days=2)] * 50, NOW, limits) is None


# --- Issue 16: every header and filename goes out as the literal text it holds --------------

ENCODED_WORD = "=?utf-8?q?hi=0D=0ABcc:_x@evil.example?="
HOSTILE = [
    ENCODED_WORD,
    "=?utf-8?b?aGkNCkJjYzogeEBldmlsLmV4YW1wbGU=?=",  # the same in base64
    '"=?utf-8?q?a=0D=0AContent-Type:_text/html?=" <x>',
    "請求書について 〜 至急",
    "مرحبا، نحتاج إلى المساعدة",
    "Printer 🔥 on fire 🎉",
    "Re: " + "長い件名" * 40,
    "a " * 200,
    "  leading and trailing  ",
    "",
]


def head_of(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[0]


def rfc2047(value: str) -> str:
    """RFC 2047 decoding (whitespace between adjacent encoded words ignored)."""
    return str(make_header(decode_header(value)))


@pytest.mark.parametrize("text", HOSTILE)
def test_subjects_and_names_arrive_as_the_literal_text(text: str) -> None:
    raw = compose(draft(subject=text, sender_name=text or "Support"), 10**6)
    head = head_of(raw)
    assert head.isascii() and b"\r\n\r\n" not in head
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    assert re.search(rb"(?im)^(bcc|content-type: text/html)", head) is None
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["Subject"] == text
    assert [k for k in parsed if k.lower() in ("bcc", "cc")] == []
    assert parsed.get_content_type() == "text/plain" and not parsed.is_multipart()
    (sender,) = parsed["From"].addresses
    assert sender.addr_spec == "support@example.com"
    old = message_from_bytes(raw, policy=compat32)
    phrase = str(old["From"]).rpartition(" <")[0]
    if phrase.count("=?utf-8?b?") > 1:
        # Python's phrase parser puts a space between adjacent encoded words (RFC 2047 says
        # ignore it): long names are checked with a decoder that follows the RFC.
        assert rfc2047(phrase) == text
    else:
        assert sender.display_name == (text or "Support")
    if "=?" in str(old["Subject"]):
        assert rfc2047(str(old["Subject"])) == text


def test_an_ascii_subject_is_written_as_it_is_and_folded_only_at_spaces() -> None:
    text = "Printer on fire in building " + " ".join(f"room{n}" for n in range(40))
    head = head_of(compose(draft(subject=text), 10**6)).decode()
    subject = re.search(r"(?m)^Subject:[^\r\n]*(\r\n[ \t][^\r\n]*)*", head)
    assert subject is not None and "=?" not in subject.group()
    assert subject.group().replace("\r\n", "") == f"Subject: {text}"
    assert all(len(line) <= 78 for line in subject.group().split("\r\n"))


@pytest.mark.parametrize(
    "breaker", ["\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\x1b", "\x7f", "\x9b", "\t"]
)
def test_any_control_character_in_a_header_value_is_refused(breaker: str) -> None:
    with pytest.raises(OutboundError, match=f"U\\+{ord(breaker):04X}"):
        compose(draft(subject=f"Hi{breaker}there"), 10**6)
    with pytest.raises(OutboundError, match="control character"):
        compose(draft(sender_name=f"Sup{breaker}port"), 10**6)


def test_a_lone_surrogate_is_a_clear_error_not_a_crash() -> None:
    with pytest.raises(OutboundError, match="not valid Unicode"):
        compose(draft(subject="a\ud800b"), 10**6)
    with pytest.raises(OutboundError, match="not valid Unicode"):
        compose(draft(body="a\udc80b"), 10**6)


@pytest.mark.parametrize(
    "filename",
    [
        "invoice.pdf",
        ENCODED_WORD + ".pdf",
        '=?utf-8?q?a=0D=0AContent-Type:_text/html?= "quoted" \\ name.pdf',
        "請求書 2026年11月.pdf",
        "تقرير.pdf",
        "📎 " + "添付ファイル" * 30 + ".zip",
    ],
)
def test_attachment_names_are_rfc_2231_with_an_ascii_fallback(filename: str) -> None:
    attachment = Attachment(filename, "application/pdf", b"%PDF-1.4 data")
    raw = compose(draft(attachments=(attachment,)), 10**6)
    parsed = message_from_bytes(raw, policy=default)
    (part,) = list(parsed.iter_attachments())
    assert part.get_filename() == filename
    assert part.get_param("name") == filename
    assert part.get_content() == b"%PDF-1.4 data"
    for block in raw.split(b"\r\n\r\n")[:-1]:
        assert block.isascii() and all(len(x) <= 998 for x in block.split(b"\r\n"))
    # Old readers take the ASCII fallback: plain text, never an encoded word to decode.
    fallback = re.search(rb'(?m)^ filename="([^"]*)"', raw)
    assert fallback is not None and b"=?" not in fallback.group(1)
    if filename.isascii() and "=?" not in filename and '"' not in filename:
        assert b"filename*" not in raw and fallback.group(1) == filename.encode()


def test_an_attachment_s_claimed_type_cannot_carry_headers() -> None:
    hostile = Attachment("a.html", "text/html\r\nBcc: x@evil.example", b"<b>x</b>")
    nested = Attachment("b.eml", "multipart/mixed", b"--x\r\n")
    raw = compose(draft(attachments=(hostile, nested)), 10**6)
    parsed = message_from_bytes(raw, policy=default)
    kinds = [p.get_content_type() for p in parsed.iter_attachments()]
    assert kinds == ["application/octet-stream", "application/octet-stream"]
    assert b"Bcc" not in raw and parsed["Bcc"] is None


def test_the_body_is_one_text_part_of_quoted_printable_utf_8() -> None:
    body = "こんにちは\nمرحبا 🎉\n--=_mf_boundary\n.\nFrom here\n"
    raw = compose(draft(body=body), 10**6)
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = message_from_bytes(raw, policy=default)
    assert parsed.get_content_type() == "text/plain" and not parsed.is_multipart()
    assert parsed.get_content().replace("\r\n", "\n") == body


def test_an_original_that_holds_our_boundary_gets_another() -> None:
    first = compose(draft(attachments=(Attachment("o.eml", "message/rfc822", b"x\r\n"),)), 10**6)
    boundary = re.search(rb'boundary="([^"]+)"', first)
    assert boundary is not None
    original = b"From: a@b.example\r\nSubject: x\r\n\r\n--" + boundary.group(1) + b"\r\n"
    raw = compose(draft(attachments=(Attachment("o.eml", "message/rfc822", original),)), 10**6)
    assert boundary.group(1) not in re.findall(rb'boundary="([^"]+)"', raw)
    (part,) = list(message_from_bytes(raw, policy=default).iter_attachments())
    assert part.get_content()["Subject"] == "x"


# --- The gate: the serialised header block, checked before any transport gets it ------------


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (lambda h: h + b"\r\nBcc: x@evil.example", "unexpected bcc"),
        (lambda h: h + b"\r\nContent-Type: text/html", "headers are not the ones"),
        (lambda h: h.replace(b"\r\nDate:", b"\nDate:"), "bare CR or LF"),
        (lambda h: h.replace(b"\r\nDate:", b"\rDate:"), "bare CR or LF"),
        (lambda h: h + b"\r\nX-Long: " + b"a" * 1000, "longer than 998"),
        (lambda h: h + "\r\nX-Name: é".encode(), "non-ASCII"),
        (lambda h: h + b"\r\nnot a header", "neither a header"),
        (lambda h: h.replace(b"Subject:", b"Subject:\x0b"), "control character"),
        (lambda h: b" folded\r\n" + h, "stray continuation"),
    ],
)
def test_the_gate_refuses_a_header_block_we_did_not_write(
    tamper: Callable[[bytes], bytes], why: str
) -> None:
    mail = draft()
    raw = compose(mail, 10**6)
    check_wire(raw, mail)  # what compose wrote passes
    head, _, body = raw.partition(b"\r\n\r\n")
    with pytest.raises(OutboundError, match=why):
        check_wire(tamper(head) + b"\r\n\r\n" + body, mail)


def test_the_gate_reads_each_mime_part_but_not_an_attached_original() -> None:
    original = b"From: a@b.example\r\nBcc: inside@the.original\r\nSubject: x\r\n\r\nhi\r\n"
    mail = draft(attachments=(Attachment("o.eml", "message/rfc822", original),))
    raw = compose(mail, 10**6)
    check_wire(raw, mail)  # the original's own Bcc is its business
    part = raw.index(b"Content-Type: message/rfc822")
    tampered = raw[:part] + b"Bcc: x@evil.example\r\n" + raw[part:]
    with pytest.raises(OutboundError, match="MIME part 1: the headers"):
        check_wire(tampered, mail)


# --- Issue 16 point 2: In-Reply-To and References as plain <id> tokens ------------------------

SIGNED = "mf.case.0123456789abcdef.n1a2b3c4d5e6.0123456789abcdef0123@mailfiler.invalid"
OUTLOOK = (
    "AM0PR07MB6183A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E7F8A9B0@AM0PR07MB6183.eurprd07.prod.outlook.com"
)


@pytest.mark.parametrize(
    "answered",
    [
        "a" * 52 + "@example.org",
        "b" * 108 + "@example.org",
        "c" * 238 + "@example.org",
        SIGNED,
        OUTLOOK,
        "[x]@host",
        "x!#$%&'*+/=?^_`{|}~-@[192.0.2.1]",
    ],
)
def test_thread_ids_are_plain_tokens_folded_only_between_ids(answered: str) -> None:
    references = ("root-" + "r" * 120 + "@example.org", SIGNED, OUTLOOK, answered)
    raw = compose(draft(in_reply_to=answered, references=references), 10**6)
    head = head_of(raw).decode("ascii")
    parsed = message_from_bytes(raw, policy=compat32)
    assert parsed["In-Reply-To"] == f"<{answered}>"
    assert re.findall(r"<([^>]*)>", parsed["References"]) == list(references)
    refs = re.search(r"(?m)^References: [^\r\n]*(\r\n [^\r\n]*)*", head)
    irt = re.search(r"(?m)^In-Reply-To: [^\r\n]*(\r\n [^\r\n]*)*", head)
    assert refs is not None and irt is not None
    assert irt.group() == f"In-Reply-To: <{answered}>"  # one line, however long
    assert "=?utf-8?" not in refs.group().lower()
    # Every line of References is whole ids; the only folding is CRLF SP between them.
    for line in refs.group().removeprefix("References: ").split("\r\n"):
        assert re.fullmatch(r" ?<[!-;=?-~]+>( <[!-;=?-~]+>)*", line), line


@pytest.mark.parametrize(
    "bad", ["has space@x", "a<b@x", "a>b@x", "ümlaut@x", "tab\t@x", "", "x" * 901 + "@y"]
)
def test_an_invalid_id_is_left_out_and_the_mail_still_goes(bad: str) -> None:
    raw = compose(draft(in_reply_to=bad, references=(bad, "good@example.org")), 10**6)
    parsed = message_from_bytes(raw, policy=compat32)
    assert parsed["In-Reply-To"] is None
    assert parsed["References"] == "<good@example.org>"
    assert compose(draft(in_reply_to=bad, references=(bad,)), 10**6).count(b"References") == 0


# --- Issue 16 point 7: addresses as they go on the wire ---------------------------------------


def test_idna_domains_go_out_as_punycode() -> None:
    assert check_address("a@пример.рф") == "a@xn--e1afmkfd.xn--p1ai"
    assert check_address("Ann <ann@Straße.example>") == "ann@xn--strae-oqa.example"  # IDNA 2008
    raw = compose(draft(to=("a@пример.рф",), cc=("b@例え.テスト",)), 10**6)
    parsed = message_from_bytes(raw, policy=default)
    assert parsed["To"] == "a@xn--e1afmkfd.xn--p1ai"
    assert parsed["Cc"] == "b@xn--r8jz45g.xn--zckzah"


def test_a_non_ascii_local_part_needs_smtputf8_and_is_refused() -> None:
    with pytest.raises(OutboundError, match="SMTPUTF8"):
        check_address("пользователь@пример.рф")


@pytest.mark.parametrize(
    "value",
    [
        '"a b"@example.org',
        "a..b@example.org",
        ".a@example.org",
        "a@-x-.example",
        "x" * 65 + "@example.org",
    ],
)
def test_local_parts_and_domains_outside_the_plain_forms_are_refused(value: str) -> None:
    with pytest.raises(OutboundError):
        check_address(value)
