"""The claim of the configuration a storage account serves (services/serving.py): one row, table
`Mailboxes`, PK `serving`, RK `config` (mailbox status rows use other partitions). Every change
but the first insert is guarded by the ETag the caller read, so of two processes one wins."""

from __future__ import annotations

from datetime import datetime

from .tables import Entity, Table

SERVING = "serving"
CLAIM = "config"


def read(table: Table) -> Entity | None:
    return table.get(SERVING, CLAIM)


def new_claim(
    *,
    fingerprint: str,
    config_path: str,
    holder: str,
    kind: str,
    now: datetime,
    until: datetime,
    mailboxes: str,
    record_types: str,
) -> Entity:
    return {
        "PartitionKey": SERVING,
        "RowKey": CLAIM,
        "Fingerprint": fingerprint,
        "ConfigPath": config_path[:1000],
        "Holder": holder,
        "Kind": kind,
        "Since": now,
        "HeartbeatAt": now,
        "Until": until,
        "Mailboxes": mailboxes[:2000],
        "RecordTypes": record_types[:2000],
    }


def insert(table: Table, claim: Entity) -> bool:
    """The first claim; False when another process inserted one first."""
    return table.insert(claim) is not None


def replace(table: Table, claim: Entity, etag: str) -> bool:
    """Take the claim over from the row read with `etag`; False if it changed since."""
    return table.update_if_unchanged(claim, etag)


def beat(table: Table, etag: str, now: datetime, until: datetime) -> Entity | None:
    """Renew (or, with `until` = now, end) the claim read with `etag`: the fields written, or
    None if it changed since."""
    fields = {"PartitionKey": SERVING, "RowKey": CLAIM, "HeartbeatAt": now, "Until": until}
    return fields if table.update_if_unchanged(fields, etag) else None
