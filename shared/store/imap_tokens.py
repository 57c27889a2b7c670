"""An IMAP mailbox's OAuth sign-in, in table `ImapState` (PK the mailbox, RK `oauth`): the
token cache as the source encrypted it (never plain text: sources/imap/oauth.py holds the key),
the account, and when the sign-in and the last refresh happened (for `/api/health`)."""

from __future__ import annotations

from typing import Any

from .keys import IMAP_OAUTH_ROW
from .tables import Entity, Table


def load(table: Table, mailbox: str) -> Entity | None:
    return table.get(mailbox, IMAP_OAUTH_ROW)


def save(table: Table, mailbox: str, **fields: Any) -> None:
    """Merge `fields` (Cache, Account, SignedInAt, RefreshedAt, ExpiresAt) into the row."""
    table.upsert({"PartitionKey": mailbox, "RowKey": IMAP_OAUTH_ROW, **fields})
