"""Table Records: a record type's partition holds its records (RowKey: the record's key) and,
after them, its number rows (store/numbers.py). A record's columns: Title, Status, Contact,
Mailbox, CreatedAt, CreatedFrom, UpdatedAt, Tags, DisplayId, Number and one `F_<name>` per
field of its type."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from azure.core.paging import ItemPaged

from ..core.contracts import RecordRef
from .keys import NUMBER_ROWS
from .numbers import create_numbered
from .stores import RECORDS, Stores
from .tables import Entity, from_storage

FIELD = "F_"  # a field's column: F_<name>


def field_columns(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{FIELD}{name}": value for name, value in fields.items()}


def _row(record: RecordRef, columns: Mapping[str, Any]) -> Entity:
    return {"PartitionKey": record.type, "RowKey": record.key, **columns}


def get(stores: Stores, record: RecordRef) -> Entity | None:
    return stores.table(RECORDS).get(record.type, record.key)


def display_id(stores: Stores, record: RecordRef) -> str | None:
    row = get(stores, record)
    return str(row["DisplayId"]) if row and row.get("DisplayId") else None


def create(
    stores: Stores, record: RecordRef, prefix: str, columns: Mapping[str, Any]
) -> tuple[int | None, Entity | None]:
    """Insert the record numbered (store/numbers.py): (number, None), or (None, the record)
    when it exists already."""
    return create_numbered(stores, record.type, prefix, _row(record, columns))


def merge(stores: Stores, record: RecordRef, columns: Mapping[str, Any]) -> None:
    stores.table(RECORDS).upsert(_row(record, columns))


def merge_if_unchanged(
    stores: Stores, record: RecordRef, columns: Mapping[str, Any], etag: str
) -> bool:
    """Merge `columns` only if nobody changed the record since `etag`; False on a conflict."""
    return stores.table(RECORDS).update_if_unchanged(_row(record, columns), etag)


def ref_of(row: Mapping[str, Any]) -> RecordRef:
    """The record a row of table Records is."""
    return RecordRef(type=row["PartitionKey"], key=row["RowKey"])


# Records only: each type's number rows sort after its records.
_RECORDS_ONLY = "RowKey lt @numbers"


def all_records(stores: Stores) -> Iterator[Entity]:
    """Every record of every type (for the CLI and tests; the API pages)."""
    for entity in stores.table(RECORDS).client.query_entities(
        _RECORDS_ONLY, parameters={"numbers": NUMBER_ROWS}
    ):
        yield from_storage(entity)


def pages(
    stores: Stores,
    *,
    record_type: str | None,
    status: str | None,
    contact: str | None,
    limit: int,
    mailbox: str | None = None,
) -> ItemPaged[Any]:
    """The records matching the filters, `limit` a page (the SDK's pager: the caller pages it
    with its continuation token); rows come as the SDK gives them (`from_storage` them)."""
    clauses, params = [_RECORDS_ONLY], {"numbers": NUMBER_ROWS}
    if record_type:
        clauses.append("PartitionKey eq @type")
        params["type"] = record_type
    if status:
        clauses.append("Status eq @status")
        params["status"] = status
    if contact:
        clauses.append("Contact eq @contact")
        params["contact"] = contact
    if mailbox:
        clauses.append("Mailbox eq @mailbox")
        params["mailbox"] = mailbox
    query = " and ".join(clauses)
    return stores.table(RECORDS).client.query_entities(
        query, parameters=params, results_per_page=limit
    )
