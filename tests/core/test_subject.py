"""normalize_subject: reply/forward prefixes in many languages, tags kept, words left alone."""

from __future__ import annotations

import pytest

from shared.core.subject import normalize_subject


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: Hello", "Hello"),
        ("RE: RE: Re: Hello", "Hello"),
        ("Re:Re:Hello", "Hello"),
        ("RE[2]: Hello", "Hello"),
        ("Re(3): Hello", "Hello"),
        ("Re^2: Hello", "Hello"),
        ("Re : Bonjour", "Bonjour"),
        ("Fwd: Hello", "Hello"),
        ("Fw: Hello", "Hello"),
        ("FW: Hello", "Hello"),
        ("AW: WG: Angebot", "Angebot"),
        ("SV: Hej", "Hej"),
        ("Svar: Hej", "Hej"),
        ("VS: Hei", "Hei"),
        ("Antw: Offerte", "Offerte"),
        ("Antwort: Offerte", "Offerte"),
        ("Doorst: Offerte", "Offerte"),
        ("Wtr: Offerte", "Offerte"),
        ("Rif: Ordine", "Ordine"),
        ("RIF: Ordine", "Ordine"),
        ("R: Ordine", "Ordine"),
        ("I: Ordine", "Ordine"),
        ("TR: Facture", "Facture"),
        ("RV: Factura", "Factura"),
        ("Enc: Proposta", "Proposta"),
        ("Res: Proposta", "Proposta"),
        ("RES: Proposta", "Proposta"),
        ("Odp: Faktura", "Faktura"),
        ("PD: Faktura", "Faktura"),
        ("Ynt: Fatura", "Fatura"),
        ("YNT: Fatura", "Fatura"),
        ("Ilt: Fatura", "Fatura"),
        ("ILT: Fatura", "Fatura"),
        ("ΑΠ: Τιμολόγιο", "Τιμολόγιο"),
        ("ΣΧΕΤ: Τιμολόγιο", "Τιμολόγιο"),
        ("ПР: Счёт", "Счёт"),
        ("HA: Счёт", "Счёт"),
        ("Отв: Счёт", "Счёт"),
        ("回复：发票", "发票"),
        ("回覆: 發票", "發票"),
        ("答复: 发票", "发票"),
        ("转发: 发票", "发票"),
        ("轉寄: 發票", "發票"),
        ("返信: 請求書", "請求書"),
        ("転送：請求書", "請求書"),
        ("Fwd： Full width", "Full width"),
        ("re: fwd: RE: aw: mixed", "mixed"),
        ("  Re:   lots   of\tspace  ", "lots of space"),
    ],
)
def test_prefixes_are_stripped(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected


@pytest.mark.parametrize(
    "subject",
    [
        "Rebate: 10% off",
        "Reply needed",
        "Reminder: meeting",
        "Invoice 42",
        "Indeed: yes",
        "Results: Q3",
        "Travel plans",
        "Fwdx: not a prefix",
        "Haus: kaufen",
        "R : spaced single letter",
        "I am here",
        "Svar",
    ],
)
def test_words_that_only_start_like_a_prefix_stay(subject: str) -> None:
    assert normalize_subject(subject) == subject


def test_prefix_must_be_at_start() -> None:
    assert normalize_subject("Hello Re: world") == "Hello Re: world"


def test_re_before_a_word_starting_with_re() -> None:
    assert normalize_subject("Re: Rebate") == "Rebate"
    assert normalize_subject("RE: Re-order") == "Re-order"


def test_record_tags_survive_and_prefixes_after_them_go() -> None:
    assert normalize_subject("Re: [CASE-12] Contract") == "[CASE-12] Contract"
    assert normalize_subject("[CASE-12] Re: Contract") == "[CASE-12] Contract"
    assert normalize_subject("[list] [CASE-12] AW: x") == "[list] [CASE-12] x"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("[EXTERNAL] Re: Contract", "Contract"),
        ("RE: [EXT] Contract", "Contract"),
        ("[External Sender] FW: Contract", "Contract"),
        ("[External] [CASE-7] Contract", "[CASE-7] Contract"),
    ],
)
def test_external_banners_at_start_are_dropped(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected


def test_external_banner_in_the_middle_stays() -> None:
    assert normalize_subject("Contract [EXTERNAL]") == "Contract [EXTERNAL]"


@pytest.mark.parametrize("subject", ["", "   ", "Re:", "RE: FW: ", "[EXT]"])
def test_empty_results(subject: str) -> None:
    assert normalize_subject(subject) == ""


def test_idempotent() -> None:
    once = normalize_subject("AW: [CASE-1] Re: Fwd:  x  y")
    assert once == "[CASE-1] x y"
    assert normalize_subject(once) == once
