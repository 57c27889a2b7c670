"""The declarative config: valid files load, every problem is reported with its path."""

from __future__ import annotations

import pytest

from shared.core.config import ConfigError, LocalMailbox, parse_config

from ..conftest import SAMPLES

BASE = """
record_types: [{name: case, prefix: CASE}]
mailboxes:
"""


def problems(text: str) -> list[str]:
    """What a person reads: `cfg.yaml:LINE: place: problem` per problem, less the file name."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    lines = str(info.value).splitlines()
    assert all(line.startswith("cfg.yaml") for line in lines)
    return [line.removeprefix("cfg.yaml") for line in lines]


def test_sample_config_is_valid() -> None:
    config = parse_config((SAMPLES / "mailfiler.yaml").read_text(), "sample")
    mailbox = config.mailbox("sample")
    assert isinstance(mailbox, LocalMailbox) and mailbox.path == "mail"
    assert config.routes[0].fields == {"ProblemType": "Billing"}


def test_missing_field_is_named_by_path() -> None:
    assert problems(BASE + "  - {name: a, kind: local, record_type: case}") == [
        ":4: mailboxes.a: 'path' is required here"
    ]


def test_unknown_kind_and_extra_keys_are_refused() -> None:
    found = problems(BASE + "  - {name: a, kind: pop3, record_type: case}")
    assert found == [":4: mailboxes.a: kind 'pop3' is not one of: local, imap, graph, ews"]
    found = problems(BASE + "  - {name: a, kind: local, path: p, record_type: case, colour: red}")
    assert found == [":4: mailboxes.a: unknown key 'colour'"]


def test_inline_secrets_are_refused_with_the_way_to_do_it() -> None:
    found = problems(
        BASE + "  - {name: a, kind: imap, host: h, username: u, password: hunter2,"
        " record_type: case}"
    )
    assert len(found) == 1
    assert "write 'password_setting: NAME'" in found[0]
    assert "hunter2" not in found[0]


def test_secret_settings_are_listed() -> None:
    config = parse_config(
        BASE + "  - {name: a, kind: imap, host: h, username: u, password_setting: IMAP_A,"
        " record_type: case}"
    )
    assert config.secret_settings() == {"IMAP_A": "mailboxes[0].password_setting"}


def test_cross_references_and_duplicates() -> None:
    found = problems(
        BASE
        + "  - {name: a, kind: local, path: p, record_type: nope}\n"
        + "  - {name: a, kind: local, path: p, record_type: case}\n"
        + "routes: [{name: r, mailbox: zz, record_type: case}]\n"
    )
    # Duplicate names: the place is the index (the name says nothing); sorted by line.
    assert found == [
        ":4: mailboxes[0].record_type: unknown record type 'nope' (known: case)",
        ":5: mailboxes[1].name: duplicate name 'a'",
        ":6: routes[0].mailbox: unknown mailbox 'zz' (known: a)",
    ]


def test_yaml_syntax_errors_have_a_position() -> None:
    assert problems("record_types: [\n") == [
        ":2: YAML syntax error at column 1: did not find expected node content"
    ]


def test_a_file_that_is_not_a_mapping() -> None:
    assert problems("- just\n- a list\n") == [
        ": the file must be a mapping with record_types and mailboxes"
    ]


def test_sent_folders_by_kind_and_authserv_ids() -> None:
    config = parse_config(
        BASE
        + "  - {name: loc, kind: local, path: p, record_type: case}\n"
        + "  - {name: old, kind: local, path: q, record_type: case, sent: true}\n"
        + "  - {name: imap, kind: imap, host: h, username: u, password_setting: P,"
        + " record_type: case, smtp: {host: s, username: u, password_setting: P,"
        + " sent_folder: Gesendet}, authserv_id: mx.example.com}\n"
        + "  - {name: ews, kind: ews, endpoint: 'https://e/EWS/Exchange.asmx', email: a@b,"
        + " username: u, password_setting: P, access_type: delegate, record_type: case,"
        + " authserv_id: [mx1.example.com, mx2.example.com]}\n"
        + "  - {name: m365, kind: graph, user: u, tenant_id: t, client_id: c,"
        + " client_secret_setting: S, polling_only: true, record_type: case,"
        + " sent_folders: [Outbox/Done]}\n"
    )

    def sent(name: str, folder: str | None) -> bool:
        mailbox = config.mailbox(name)
        assert mailbox is not None
        return mailbox.is_sent_folder(folder)

    assert not sent("loc", None) and not sent("loc", "Sent") and sent("old", None)
    assert sent("imap", "Gesendet") and sent("imap", "sent items")
    assert sent("imap", "[Gmail]/Sent Mail") and not sent("imap", "INBOX")
    assert sent("ews", "sentitems") and not sent("ews", "inbox")
    # A list replaces the kind's default.
    assert sent("m365", "outbox/done") and not sent("m365", "sentitems")
    imap, ews = config.mailbox("imap"), config.mailbox("ews")
    assert imap is not None and imap.authserv_id == ("mx.example.com",)
    assert ews is not None and ews.authserv_id == ("mx1.example.com", "mx2.example.com")
    found = problems(
        BASE + "  - {name: a, kind: local, path: p, record_type: case, "
        "authserv_id: 'mx; dmarc=pass'}"
    )
    assert found == [
        ":4: mailboxes.a.authserv_id[0]: 'mx; dmarc=pass' is not allowed: a host name as the "
        "server writes it in Authentication-Results, e.g. mx.example.com"
    ]


def test_route_field_values_and_dates_in_our_words() -> None:
    found = problems(
        "record_types: [{name: case, prefix: CASE, fields: [{name: Due, type: date},"
        " {name: Kind, type: choice, choices: [Счёт, Техника]}]}]\n"
        "mailboxes: [{name: a, kind: local, path: p, record_type: case}]\n"
        "routes:\n"
        "  - {name: r, record_type: case, fields: {due: '2026-13-01', kind: счёт, Note: [1]}}\n"
    )
    # `kind: счёт` matches the choice Счёт (case-insensitive, as mail's fields do).
    assert found == [
        ":4: routes[0].fields.Note: text or a whole number, not [1]",
    ]
    found = problems(
        "record_types: [{name: case, prefix: CASE, fields: [{name: Due, type: date}]}]\n"
        "mailboxes: [{name: a, kind: local, path: p, record_type: case}]\n"
        "routes: [{name: r, record_type: case, fields: {due: '2026-13-01', Kind: x}}]\n"
    )
    assert found == [
        ":3: routes[0].fields.due: Due is a date field: '2026-13-01' is not a date as YYYY-MM-DD",
        ":3: routes[0].fields.Kind: record type 'case' has no field 'Kind' (its fields: Due; "
        "declare it under the record type's fields)",
    ]


def test_a_date_yaml_cannot_read_and_unknown_keys_in_templates() -> None:
    assert problems("since: 2026-13-01\n") == [
        ": a date that does not exist (month must be in 1..12); quote it if it is text"
    ]
    found = problems(
        "record_types: [{name: case, prefix: CASE, templates: {acknowledge: {subject: s,"
        " bdy: b}}}]\n" + "mailboxes: [{name: a, kind: local, path: p, record_type: case}]\n"
    )
    assert found == [
        ":1: record_types.case.templates.acknowledge: 'body' is required here",
        ":1: record_types.case.templates.acknowledge: unknown key 'bdy' (did you mean 'body'?)",
    ]
