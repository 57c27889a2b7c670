"""Keys of the Graph subscription, nonce and IMAP sign-in rows, moved into store/keys.py, stay
what they were: a deployment must keep finding its subscriptions and its token caches.

The expected values were computed once with the code before the move (sources/graph/state.py
`subscription_row`, `NONCES`, `SUBSCRIPTIONS`; sources/imap/oauth.py `OAUTH_ROW`), from the
same inputs, and are written here as literals."""

from __future__ import annotations

from shared.store import keys


def test_subscription_and_nonce_rows_keep_their_keys() -> None:
    assert keys.SUBSCRIPTIONS == "subscription"
    assert keys.NONCES == "nonce"
    assert keys.subscription_row("поддержка", "folder-входящие") == "поддержка~folder-входящие"
    assert keys.subscription_row("m365", "mail") == "m365~mail"


def test_a_mailboxs_subscription_range_holds_its_rows_and_no_other_mailboxs() -> None:
    start, before = keys.subscription_rows("m365")
    assert start <= keys.subscription_row("m365", "events") < before
    assert start <= keys.subscription_row("m365", "folder-受信トレイ") < before
    assert not start <= keys.subscription_row("m365-2", "mail") < before
    assert not start <= keys.subscription_row("m36", "mail") < before


def test_the_imap_sign_in_row_keeps_its_key() -> None:
    assert keys.IMAP_OAUTH_ROW == "oauth"
