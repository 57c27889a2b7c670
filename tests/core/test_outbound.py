"""Composing outbound mail safely, and RFC 3834's rules for automatic answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.outbound import (
    Draft,
    Limits,
    OutboundError,
    check_address,
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
