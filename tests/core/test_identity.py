"""Our own addresses have one definition: what the map stage recognises as our mail coming
back is what outbound never answers, and it includes each mailbox's sign-in identity."""

from __future__ import annotations

from shared.core.classify import classify
from shared.core.config import parse_config
from shared.core.decide import own_mail
from shared.core.identity import own_addresses, sender_of
from shared.core.mime import parse_message

CONFIG = parse_config(
    """
record_types: [{name: case, prefix: CASE}]
mailboxes:
  - {name: m365, kind: graph, user: Poddержка@Contoso.com, tenant_id: t, client_id: c,
     client_secret_setting: S, polling_only: true, record_type: case}
  - {name: imap, kind: imap, host: imap.example.org, username: Desk@Example.org,
     password_setting: P, record_type: case, addresses: [help@example.org, Desk@Example.org]}
  - {name: ews, kind: ews, endpoint: "https://mail.example.net/EWS/Exchange.asmx",
     email: 客服@example.net, auth: basic, username: svc, password_setting: E,
     access_type: delegate, record_type: case}
"""
)


def test_one_set_of_own_addresses_for_map_and_outbound() -> None:
    ours = own_addresses(CONFIG)
    assert ours == {
        "poddержка@contoso.com",  # a Graph mailbox with no listed address: its user
        "help@example.org",
        "desk@example.org",
        "客服@example.net",  # an EWS mailbox: its mailbox address
    }
    assert own_mail(CONFIG).addresses == ours
    assert [sender_of(m) for m in CONFIG.mailboxes] == [
        "Poddержка@Contoso.com",
        "help@example.org",
        "客服@example.net",
    ]


def test_mail_carrying_our_loop_header_with_a_sign_in_identity_is_our_own() -> None:
    raw = (
        "From: someone@example.com\r\nTo: poddержка@contoso.com\r\nSubject: hi\r\n"
        "Message-ID: <l1@example.com>\r\nX-Mailfiler-Loop: poddержка@contoso.com\r\n\r\nhi\r\n"
    ).encode()
    message = parse_message(raw, mailbox="m365", source_id="1")
    assert classify(message, own_mail(CONFIG)).kind == "own_loop"
