"""Table Contacts: an address's partition (keys.contact_partition) holds the contact (RowKey
keys.CONTACT) and the sender rate limit's slots (store/sender_slots.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from ..core.contracts import ContactUpdate
from .keys import CONTACT, contact_partition
from .stores import CONTACTS, Stores
from .tables import Entity, transact_each


def contact(stores: Stores, address: str) -> Entity | None:
    return stores.table(CONTACTS).get(contact_partition(address), CONTACT)


def contact_row(address: str, columns: dict[str, Any]) -> Entity:
    return {"PartitionKey": contact_partition(address), "RowKey": CONTACT, **columns}


def put(stores: Stores, address: str, **columns: Any) -> None:
    """Merge `columns` into the address's contact (one an operator keeps: Kind "contact")."""
    stores.table(CONTACTS).upsert(contact_row(address, {"Address": address, **columns}))


def guest_row(update: ContactUpdate, now: datetime) -> Entity:
    """A new guest's contact row: inserted, never upserted (a guest never overwrites a contact
    someone set up)."""
    return contact_row(
        update.address,
        {
            "Address": update.address,
            "Name": update.name[:200],
            "Kind": "guest",
            "Allowed": True,
            "CreatedAt": now,
        },
    )


def apply(stores: Stores, updates: Sequence[ContactUpdate], now: datetime) -> None:
    """Contact updates, one transaction per contact's partition: usually one request."""
    by_partition: dict[str, list[tuple[Literal["insert", "upsert"], Entity]]] = {}
    for update in updates:
        op: Literal["insert", "upsert"]
        if update.kind == "guest":
            row, op = guest_row(update, now), "insert"
        else:
            columns = {
                "Address": update.address,
                "UndeliverableSince": now,
                "UndeliverableDetail": update.detail,
            }
            op, row = "upsert", contact_row(update.address, columns)
        by_partition.setdefault(row["PartitionKey"], []).append((op, row))
    transact_each(stores.table(CONTACTS), by_partition.values())
