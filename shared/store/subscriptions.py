"""Graph subscriptions as `GraphState` keeps them (sources/graph/subscriptions.py makes the Graph
calls; the webhook checks the nonces):

- PK `subscription`, RK `<mailbox>~<kind>`: subscription id, resource, change type, nonce,
  expiry, status (`active`/`failing`), which secret made it, last error. One partition, so a
  pass reads them in pages and writes renewals 100 to a transaction.
- PK `nonce`, RK the nonce: the mailbox and kind it belongs to, and (once Graph answered) the
  subscription id. Written before the subscription is created: Graph may notify at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from .keys import NONCES, SUBSCRIPTIONS, subscription_row, subscription_rows
from .tables import Entity, Table


def all_rows(table: Table) -> dict[str, Entity]:
    """Every subscription row, by RowKey (`keys.subscription_row`)."""
    return {row["RowKey"]: row for row in table.partition(SUBSCRIPTIONS)}


def of_mailbox(table: Table, mailbox: str) -> dict[str, Entity]:
    """A mailbox's subscription rows, by kind."""
    start, before = subscription_rows(mailbox)
    rows = table.partition(SUBSCRIPTIONS, row_from=start, row_before=before)
    return {str(row["RowKey"]).partition("~")[2]: row for row in rows}


def get(table: Table, mailbox: str, kind: str) -> Entity | None:
    return table.get(SUBSCRIPTIONS, subscription_row(mailbox, kind))


def note_failing(table: Table, mailbox: str, kind: str, error: str, now: datetime) -> None:
    table.upsert(
        {
            "PartitionKey": SUBSCRIPTIONS,
            "RowKey": subscription_row(mailbox, kind),
            "Mailbox": mailbox,
            "Status": "failing",
            "LastError": error[:2000],
            "LastErrorAt": now,
        }
    )


def note_active(
    table: Table,
    mailbox: str,
    kind: str,
    *,
    subscription_id: str,
    resource: str,
    change_type: str,
    nonce: str,
    expires: datetime,
    secret_id: str,
    now: datetime,
) -> None:
    """A subscription Graph just created."""
    table.upsert(
        {
            "PartitionKey": SUBSCRIPTIONS,
            "RowKey": subscription_row(mailbox, kind),
            "Mailbox": mailbox,
            "SubscriptionId": subscription_id,
            "Resource": resource,
            "ChangeType": change_type,
            "Nonce": nonce,
            "Expires": expires,
            "Status": "active",
            "SecretId": secret_id,
            "LastError": "",
            "CreatedAt": now,
        }
    )


def note_renewed(table: Table, renewed: Iterable[tuple[str, datetime]], now: datetime) -> None:
    """Renewals as (RowKey, new expiry): 100 to a transaction."""
    table.upsert_batch(
        {
            "PartitionKey": SUBSCRIPTIONS,
            "RowKey": row_key,
            "Expires": expires,
            "RenewedAt": now,
            "LastError": "",
        }
        for row_key, expires in renewed
    )


def remove(table: Table, row_key: str) -> None:
    table.delete(SUBSCRIPTIONS, row_key)


def note_nonce(
    table: Table, nonce: str, mailbox: str, kind: str, subscription_id: str | None = None
) -> None:
    row: Entity = {"PartitionKey": NONCES, "RowKey": nonce, "Mailbox": mailbox, "Kind": kind}
    if subscription_id is not None:
        row["SubscriptionId"] = subscription_id
    table.upsert(row)


def nonce(table: Table, value: str) -> Entity | None:
    """The nonce's row (mailbox and kind), if it is one of ours."""
    return table.get(NONCES, value)


def forget_nonce(table: Table, value: str) -> None:
    table.delete(NONCES, value)
