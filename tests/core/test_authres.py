"""Authentication-Results (RFC 8601): parsed with comments and quoting, trusted only by id."""

from __future__ import annotations

from shared.core.authres import AuthResults, parse, trusted, vouches

OURS = ("mx.example.com",)


def test_parses_methods_properties_comments_and_quoting() -> None:
    value = (
        'mx.example.com 1 (our "edge"; server); spf=pass (sender IP is 192.0.2.1) '
        'smtp.mailfrom="support@example.com" ; dkim/1 = pass (good (nested) signature) '
        'header.d=example.com header.s=sel1; dmarc=fail reason="p=reject; no align" '
        "header.from=example.com"
    )
    parsed = parse(value)
    assert parsed is not None and parsed.authserv_id == "mx.example.com"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dmarc", "fail"),
    ]
    assert parsed.results[0].props == {"smtp.mailfrom": "support@example.com"}
    assert parsed.results[1].props == {"header.d": "example.com", "header.s": "sel1"}
    # A ";" inside a quoted string does not end the result.
    assert parsed.results[2].props["reason"] == "p=reject; no align"


def test_no_authserv_id_none_and_garbage_never_raise() -> None:
    # Exchange Online writes no authserv-id: such a header can never be ours.
    assert parse("spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.com") is None
    none = parse("mx.example.com; none")
    assert none == AuthResults("mx.example.com", ())
    for junk in ("", ";;;", "(((", '"unterminated', "a=", "=;=;=", "mx (\\", "\x00" * 50):
        parse(junk)  # no exception
    huge = parse("mx.example.com; " + "dkim=pass header.d=x; " * 20_000)
    assert huge is not None and len(huge.results) <= 64


def test_only_the_topmost_header_of_our_server_counts() -> None:
    real = "mx.example.com; dmarc=fail header.from=example.com"
    forged = "mx.example.com; dmarc=pass header.from=example.com"
    other = "evil.example; dmarc=pass header.from=example.com"
    # A sender's own header (another id) is never read; ours on top wins over a lower forgery.
    assert trusted([other], OURS) is None
    found = trusted([other, real, forged], OURS)
    assert found is not None and vouches(found, "example.com") is None
    found = trusted([forged.upper().replace("MX.EXAMPLE.COM", "MX.Example.COM")], OURS)
    assert found is not None  # authserv-ids compare case-insensitively
    assert trusted([real], ()) is None  # no id configured: nothing is trusted


def test_what_vouches_for_a_domain() -> None:
    def check(results: str) -> str | None:
        parsed = parse("mx.example.com; " + results)
        assert parsed is not None
        return vouches(parsed, "example.com")

    assert check("dmarc=pass header.from=example.com") == "dmarc=pass header.from=example.com"
    assert check("dmarc=pass") is not None  # DMARC judges the From domain itself
    assert check("dmarc=pass header.from=evil.example") is None
    assert check("dkim=pass header.d=example.com") is not None
    assert check("dkim=pass header.i=@example.com") is not None
    assert check("dkim=pass header.d=evil.example header.i=@example.com") is None
    assert check("dkim=pass header.d=mail.example.com.evil.example") is None
    assert check("spf=pass smtp.mailfrom=bounce@example.com") is not None
    assert check("spf=pass smtp.mailfrom=evil.example") is None
    assert (
        check("spf=softfail smtp.mailfrom=example.com; dkim=neutral header.d=example.com") is None
    )
    assert check("dkim=pass") is None  # who signed is unknown
