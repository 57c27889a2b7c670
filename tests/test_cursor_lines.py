"""Where a mailbox's next poll starts, as the console's operations page words it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.core.config import GraphMailbox, ImapMailbox
from shared.services.context import AppContext
from shared.services.mailboxes import cursor_lines
from shared.store.cursors import Cursors

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_each_folder_says_where_its_next_poll_starts(context: AppContext) -> None:
    imap = ImapMailbox.model_validate(
        {
            "name": "support",
            "kind": "imap",
            "host": "127.0.0.1",
            "tls": "none",
            "username": "support@example.com",
            "password_setting": "IMAP_SUPPORT_PASSWORD",
        }
    )
    assert cursor_lines(context, imap) == []  # never polled
    Cursors(context.stores, "support", "imap").save(
        {"INBOX": {"UidValidity": 7, "LastUid": 1234}, "Отправленные": {"LastUid": 9}}, NOW
    )
    assert cursor_lines(context, imap) == [
        "INBOX: LastUid 1234, UidValidity 7",
        "Отправленные: LastUid 9",
    ]
    graph = GraphMailbox.model_validate(
        {
            "name": "m365",
            "kind": "graph",
            "user": "support@contoso.com",
            "tenant_id": "00000000-0000-0000-0000-000000000000",
            "client_id": "11111111-1111-1111-1111-111111111111",
            "client_secret_setting": "GRAPH_SECRET",
        }
    )
    link = (
        "https://graph.microsoft.com/v1.0/users/x/mailFolders/inbox/messages/delta?$deltatoken="
        + "a" * 80
    )
    Cursors(context.stores, "m365", "graph").save({"inbox": {"DeltaLink": link}}, NOW)
    assert cursor_lines(context, graph) == [f"inbox: DeltaLink ({len(link)} characters)"]
    assert cursor_lines(context, context.config.mailboxes[0]) == []  # local: no cursor
