"""Table Records: a record type's partition holds its records (RowKey: the record's key), after
them its number rows (store/numbers.py), and after those its newest-first index rows
(store/record_index.py). A record's columns: Title, Status, Contact, Mailbox, CreatedAt,
CreatedFrom, UpdatedAt, Tags, DisplayId, Number and one `F_<name>` per field of its type."""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..core.contracts import RecordRef
from .keys import INDEX_MARKER, INDEX_ROWS, NUMBER_ROWS, after_prefix
from .numbers import create_numbered
from .record_index import RECORD_KEY, index_entity, listed
from .stores import RECORDS, Stores
from .tables import MAX_BATCH_OPERATIONS, Entity, Table, from_storage

log = logging.getLogger(__name__)

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
    stores: Stores,
    record: RecordRef,
    prefix: str,
    columns: Mapping[str, Any],
    beside: Sequence[Entity] = (),
) -> tuple[int | None, Entity | None]:
    """Insert the record numbered (store/numbers.py), with the rows `beside` it in the same
    transaction: (number, None), or (None, the record) when it exists already."""
    return create_numbered(stores, record.type, prefix, _row(record, columns), beside)


def merge(
    stores: Stores,
    record: RecordRef,
    columns: Mapping[str, Any],
    current: Mapping[str, Any] | None = None,
    *,
    index_row_key: str | None = None,
) -> None:
    """Merge `columns` into the record, and the listed ones into its index row in the same
    transaction. The index row is named by `current` (the record as read: its CreatedAt and
    number) or, without a read, by `index_row_key` (record_index.index_row of them: they never
    change); with neither (a record not created yet) the record row alone is written."""
    row = _row(record, columns)
    newest = listed(columns)
    if newest and current is not None and "CreatedAt" in current:
        index = index_entity(record.type, record.key, current, columns)
    elif newest and index_row_key is not None:
        index = {"PartitionKey": record.type, "RowKey": index_row_key, RECORD_KEY: record.key}
        index.update(newest)
    else:
        stores.table(RECORDS).upsert(row)
        return
    stores.table(RECORDS).transact([("upsert", row), ("upsert", index)])


def merge_if_unchanged(
    stores: Stores,
    record: RecordRef,
    columns: Mapping[str, Any],
    etag: str,
    current: Mapping[str, Any] | None = None,
) -> bool:
    """Merge `columns` only if nobody changed the record since `etag` (the index row follows in
    the same transaction, as in `merge`); False on a conflict."""
    if current is None or "CreatedAt" not in current or not listed(columns):
        return stores.table(RECORDS).update_if_unchanged(_row(record, columns), etag)
    index = index_entity(record.type, record.key, current, columns)
    return stores.table(RECORDS).transact_rows(
        [("update", _row(record, columns), etag), ("upsert", index, None)]
    )


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


def newest(
    stores: Stores,
    record_type: str,
    *,
    after: str | None,
    status: str | None,
    contact: str | None,
    mailbox: str | None,
    limit: int,
    inclusive: bool = False,
) -> list[Entity]:
    """Up to `limit` index rows of a record type matching the filters, newest first, after the
    index RowKey `after` (from it, when `inclusive`; from the first when None). The SDK follows
    the service's continuations until `limit` rows came (a filtered page may come back short)."""
    start = "ge" if inclusive and after else "gt"
    clauses = ["PartitionKey eq @type", f"RowKey {start} @after", "RowKey lt @end"]
    params: dict[str, Any] = {
        "type": record_type,
        "after": after or INDEX_ROWS,
        "end": after_prefix(INDEX_ROWS),
    }
    for column, value in (("Status", status), ("Contact", contact), ("Mailbox", mailbox)):
        if value:
            clauses.append(f"{column} eq @{column.lower()}")
            params[column.lower()] = value
    found = stores.table(RECORDS).client.query_entities(
        " and ".join(clauses), parameters=params, results_per_page=limit
    )
    return [from_storage(e) for e in itertools.islice(found, limit)]


# The Records tables (one per storage account a process uses) whose index is known filled.
_filled: weakref.WeakSet[Table] = weakref.WeakSet()


def ensure_index(stores: Stores) -> int:
    """Fill the newest-first index for records written before it existed, once: a marker row
    says it was done, so after the first time it costs one read per process. Returns the
    number of index rows written."""
    table = stores.table(RECORDS)
    if table in _filled:
        return 0
    written = 0
    if table.get(*INDEX_MARKER) is None:
        written = fill_index(stores)
        table.upsert({"PartitionKey": INDEX_MARKER[0], "RowKey": INDEX_MARKER[1], "Rows": written})
        log.info("records: newest-first index filled for %d records written before it", written)
    _filled.add(table)
    return written


def fill_index(stores: Stores) -> int:
    """Write every record's index row from the record as read. Idempotent; each write is a
    transaction with the record's own ETag, so a record changed meanwhile is read again
    rather than indexed as it was."""
    table = stores.table(RECORDS)
    written = 0
    per = MAX_BATCH_OPERATIONS // 2  # a record's guard and its index row: two operations
    # Rows come in key order, a partition after another: a chunk is one type's, streamed.
    for _, rows in itertools.groupby(all_records(stores), key=lambda row: row["PartitionKey"]):
        while chunk := list(itertools.islice(rows, per)):
            if table.transact_rows(op for row in chunk for op in _fill_ops(row)):
                written += len(chunk)
                continue
            for row in chunk:  # one changed meanwhile: each on its own, read again if need be
                written += _fill_one(table, row)
    return written


def _fill_ops(row: Entity) -> list[tuple[Any, Entity, str | None]]:
    ref = ref_of(row)
    guard = {"PartitionKey": ref.type, "RowKey": ref.key}  # merges nothing: only the ETag counts
    return [
        ("update", guard, row["_etag"]),
        ("upsert", index_entity(ref.type, ref.key, row, row), None),
    ]


def _fill_one(table: Table, row: Entity | None, attempts: int = 5) -> int:
    for _ in range(attempts):
        if row is None:
            return 0  # gone meanwhile
        if table.transact_rows(_fill_ops(row)):
            return 1
        row = table.get(row["PartitionKey"], row["RowKey"])
    raise RuntimeError("records index: a record keeps changing while it is indexed, will retry")
