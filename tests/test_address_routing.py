"""Routing on Azurite: a display name that looks like a contact's address borrows nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.core.config import parse_config
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings
from shared.stages.polls import poll_all
from shared.store import contacts
from shared.store.keys import participant_row
from shared.store.stores import MESSAGES, TIMELINE, Stores

from .helpers import local_host, records

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

CONFIG = """
record_types: [{{name: case, prefix: CASE, updates_from: contacts}}]
mailboxes:
  - {{name: support, kind: local, path: "{folder}", record_type: case,
      addresses: [support@example.com]}}
routes:
  - {{name: all, record_type: case}}
rate_limit: {{per_sender: 20, window_minutes: 60}}
"""


@pytest.fixture
def deliver(stores: Stores, azurite: Azurite, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    folder = tmp_path / "mail"
    folder.mkdir()
    config = parse_config(CONFIG.format(folder=folder))
    settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    ctx = AppContext(settings, config, tmp_path, stores)
    set_context(ctx)
    count = 0

    def run(text: str) -> None:
        nonlocal count
        count += 1
        (folder / f"{count:03d}.eml").write_text(text.strip() + "\n", encoding="utf-8")
        poll_all(ctx, NOW)
        local_host(stores.queues).drain()

    yield run
    set_context(None)


def row(stores: Stores, message_id: str, kind: str) -> dict[str, object] | None:
    return stores.table(MESSAGES).get(message_id.encode().hex(), kind)


def test_a_contacts_address_as_display_name_is_not_the_contact(
    deliver: Callable[[str], None], stores: Stores
) -> None:
    contacts.put(stores, "dan@example.org", Kind="contact", Allowed=True)
    deliver(
        "From: Дан <dan@example.org>\nTo: support@example.com\nSubject: Заявка\n"
        "Message-ID: <d1@example.org>\n\nThe printer is broken."
    )
    (record,) = records(stores)
    assert record["DisplayId"] == "CASE-1"
    # The contact's address, quoted or not, as the display name of another address.
    for n, from_ in enumerate(
        ('"dan@example.org" <mallory@evil.example>', "dan@example.org <mallory@evil.example>")
    ):
        deliver(
            f"From: {from_}\nTo: support@example.com\nSubject: Re: [CASE-1]\n"
            f"Message-ID: <m{n}@evil.example>\n\nPlease wire the money."
        )
        rejected = row(stores, f"m{n}@evil.example", "reject")
        assert rejected is not None, from_
        assert "not a contact; case takes updates from contacts only" in str(rejected["Reasons"])
        assert row(stores, f"m{n}@evil.example", "msg") is None
    # The sender is the address in brackets: a guest at most, never the contact.
    dan = contacts.contact(stores, "dan@example.org")
    assert dan is not None and dan["Kind"] == "contact"
    mallory = contacts.contact(stores, "mallory@evil.example")
    assert mallory is None or mallory["Kind"] != "contact"
    participant = stores.table(TIMELINE).get(
        f"case-{record['RowKey']}", participant_row("mallory@evil.example")
    )
    assert participant is None
    # The real contact still updates the record.
    deliver(
        "From: dan@example.org\nTo: support@example.com\nSubject: Re: [CASE-1]\n"
        "Message-ID: <d2@example.org>\n\nStill broken."
    )
    assert row(stores, "d2@example.org", "msg") is not None
