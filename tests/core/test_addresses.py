"""Addresses as RFC 5322 (Appendix A, obsolete forms included) and RFC 6532 write them.

The cases live in `tests/data/addresses/cases.json` (RFC 5322's Appendix A messages, and cases
written for this project), shared with `make bench`'s address-parse agreement figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core.addresses import MAX_VALUE_CHARS, parse_address_list
from shared.core.message import Address, MailMessage
from shared.core.mime import MAX_ADDRESSES, addresses_of, parse_message

CASES_FILE = Path(__file__).resolve().parents[1] / "data" / "addresses" / "cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text(encoding="utf-8"))


def parse(raw: str | bytes) -> MailMessage:
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return parse_message(data, mailbox="m", source_id="s")


def field(msg: MailMessage, name: str) -> list[list[str]]:
    """One address field of a parsed message as [name, address] pairs."""
    if name in ("from", "sender"):
        one = msg.from_ if name == "from" else msg.sender
        found: tuple[Address, ...] = () if one is None else (one,)
    elif name in ("to", "cc", "reply-to"):
        found = {"to": msg.to, "cc": msg.cc, "reply-to": msg.reply_to}[name]
    else:  # Resent-From, Resent-To, ...: every occurrence, read as the message reads To
        found = addresses_of(msg.header_all(name))
    return [[a.name, a.email] for a in found]


def test_the_corpus_is_all_there() -> None:
    # A missing or shrunken corpus must fail the run, not pass it vacuously.
    ids = {c["id"] for c in CASES}
    appendix = {i for i in ids if i.startswith("rfc5322-a.")}
    assert {
        "rfc5322-a.1.1",
        "rfc5322-a.1.2",
        "rfc5322-a.1.3",
        "rfc5322-a.2-reply",
        "rfc5322-a.3",
        "rfc5322-a.4",
        "rfc5322-a.5",
        "rfc5322-a.6.1",
        "rfc5322-a.6.2",
        "rfc5322-a.6.3",
    } <= appendix
    assert len(CASES) >= 25 and all(c["expect"] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_parses_to_the_addresses_meant(case: dict[str, Any]) -> None:
    msg = parse(case["raw"])
    got = {name: field(msg, name) for name in case["expect"]}
    assert got == case["expect"]


def test_appendix_a_messages_keep_their_other_fields() -> None:
    # A.6.3's obsolete `Name  :` fields: without them the stdlib read the message as a body.
    (case,) = [c for c in CASES if c["id"] == "rfc5322-a.6.3"]
    msg = parse(case["raw"])
    assert msg.subject == "Saying Hello"
    assert msg.text.startswith("This is a message just to say hello.")
    assert "obsolete-header-name" in msg.defects
    assert msg.raw == case["raw"].encode()  # the raw mail is kept as given


def test_groups_routes_and_comments() -> None:
    found, defects = parse_address_list(
        "A Group(Some people):Chris Jones <c@(Chris's host.)public.example>, "
        "<@node.test,@relay.test:mary@example.net>; Undisclosed recipients:;, "
        "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
        MAX_ADDRESSES,
    )
    assert [(a.name, f"{a.local}@{a.domain}") for a in found] == [
        ("Chris Jones", "c@public.example"),
        ("", "mary@example.net"),
        ("Pete", "pete@silly.test"),
    ]
    assert defects == ()


def test_a_display_name_is_never_the_address() -> None:
    for raw_from in (
        '"boss@bank.example" <attacker@evil.example>',
        "boss@bank.example <attacker@evil.example>",
        "=?utf-8?q?boss=40bank=2Eexample?= <attacker@evil.example>",
    ):
        msg = parse(f"From: {raw_from}\nTo: clerk@bank.example\nSubject: pay\n\nnow\n")
        assert msg.from_ is not None and msg.from_.email == "attacker@evil.example", raw_from
        assert msg.from_.name == "boss@bank.example"
    for raw_from in (
        '"boss@bank.example" <not an address>',
        '"boss@bank.example" <>',
        '"boss@bank.example" <@relay.example>',
        "boss@bank.example attacker@evil.example",
    ):
        msg = parse(f"From: {raw_from}\nTo: clerk@bank.example\nSubject: pay\n\nnow\n")
        assert msg.from_ is None, raw_from
        assert "address-invalid" in msg.defects


def test_a_repeated_header_gives_both_lists_in_order() -> None:
    msg = parse(
        "From: Иван <ivan@example.ru>\nTo: a@example.org\nSubject: x\nTo: 山田 <yamada@example.jp>"
        "\nCc: c1@example.org\nTo: Undisclosed recipients:;\nCc: مريم <maryam@example.eg>\n\nhi\n"
    )
    assert [a.email for a in msg.to] == ["a@example.org", "yamada@example.jp"]
    assert [(a.name, a.email) for a in msg.cc] == [
        ("", "c1@example.org"),
        ("مريم", "maryam@example.eg"),
    ]


def test_rfc6532_addresses_are_kept_whole() -> None:
    raw = (
        'From: 用户@例子.广告\nTo: квіточка@пошта.укр, "Ελένη" <ελένη@παράδειγμα.ελ>\n'
        "Cc: =?utf-8?b?0JDQvdC90LA=?= <АННА@ПРИМЕР.РФ>\nSubject: x\n\nhi\n"
    )
    msg = parse(raw)
    assert msg.from_ == Address("用户@例子.广告")
    assert msg.to == (Address("квіточка@пошта.укр"), Address("ελένη@παράδειγμα.ελ", "Ελένη"))
    # The domain is lower-cased, the local part kept as written.
    assert msg.cc == (Address("АННА@пример.рф", "Анна"),)


def test_the_repeated_headers_share_one_bound() -> None:
    half = ", ".join(f"u{i}@example.com" for i in range(MAX_ADDRESSES // 2 + 10))
    msg = parse(f"From: a@b.example\nTo: {half}\nTo: {half}\nTo: last@example.com\n\nx\n")
    assert len(msg.to) == MAX_ADDRESSES and "too-many-addresses" in msg.defects
    assert msg.to[MAX_ADDRESSES // 2 + 10].email == "u0@example.com"


def valid(email: str) -> bool:
    return (
        email.count("@") == 1
        and not any(ch.isspace() or ch in "<>" for ch in email)
        and all(email.split("@"))
    )


FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
NASTY = st.text(alphabet=st.sampled_from(list('ab.@<>"(),;:\\[] \t用é\u202e=?')), max_size=80)


@FUZZ
@given(st.one_of(st.text(max_size=200), NASTY))
def test_parse_address_list_never_raises_and_returns_only_addresses(value: str) -> None:
    found, defects = parse_address_list(value, 50)
    assert len(found) <= 50
    for address in found:
        assert valid(f"{address.local}@{address.domain}"), address
    assert all(isinstance(d, str) for d in defects)


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=80), NASTY), min_size=1, max_size=3))
def test_parsed_mail_has_only_addresses(values: list[str]) -> None:
    headers = "".join(
        f"{name}: {' '.join(v.split())}\n"
        for name, v in zip(("To", "Cc", "From"), values, strict=False)
    )
    msg = parse(f"{headers}To: {' '.join(values[0].split())}\nSubject: x\n\nbody\n")
    for address in (msg.from_, msg.sender, *msg.to, *msg.cc, *msg.reply_to):
        if address is not None:
            assert valid(address.email), address


def test_a_huge_header_is_read_to_a_bound_and_never_cut_inside_an_address() -> None:
    written = [f"пользователь{i}@пример{i}.example" for i in range(20_000)]
    found, defects = parse_address_list(", ".join(written), 100_000)
    assert "address-header-truncated" in defects
    got = [f"{a.local}@{a.domain}" for a in found]
    assert 1_000 < len(got) < len(written)
    assert sum(len(w) + 2 for w in got) <= MAX_VALUE_CHARS + 2
    assert got == written[: len(got)]  # every one whole, in order
    # Hostile shapes cost a bounded parse and give nothing made up.
    for value in ("<" * 400_000, "(" * 300_000 + "a@b.example", '"a,' * 100_000, ": " * 400_000):
        found, _ = parse_address_list(value, 1_000)
        assert found == ()
