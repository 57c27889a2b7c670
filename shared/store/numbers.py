"""Record numbers: each record type counts from 1 with no gaps and no number given twice (a
number's row in table Records, inserted in one transaction with its record)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from .keys import (
    NUMBER_ROWS,
    after_prefix,
    number_of_row,
    number_row,
)
from .record_index import index_entity
from .stores import (
    RECORDS,
    Stores,
)

MAX_NUMBER_ATTEMPTS = 40


def create_numbered(
    stores: Stores,
    record_type: str,
    prefix: str,
    entity: dict[str, Any],
    beside: Sequence[dict[str, Any]] = (),
) -> tuple[int | None, dict[str, Any] | None]:
    """Insert a record with the next number of its type, in one transaction with the number's
    row, its index row and the rows `beside` it (same partition; upserted): (number, None), or
    (None, the record) when the record exists already (then `beside` is not written).

    Table Storage makes the number's row unique and the transaction makes record and number one
    write, so a number is never handed out twice, a record never lacks one, and a failed try
    uses none up. Where to start is this process's last number (else the highest given out:
    one read per process and type), so creating a record is usually one request; another
    process's number costs a failed transaction and a fresh look at the highest. The process's
    creators of one type take turns (a request each), so a try that finds its record already
    there leaves its number to the next, and the sequence keeps no gaps.
    """
    records = stores.table(RECORDS)
    key = entity["RowKey"]
    with stores.number_lock(record_type):
        last = stores.last_numbers.get(record_type)
        number = (last if last is not None else highest(stores, record_type)) + 1
        for _ in range(MAX_NUMBER_ATTEMPTS):
            numbered = {**entity, "Number": number, "DisplayId": f"{prefix}-{number}"}
            number_of = {
                "PartitionKey": record_type,
                "RowKey": number_row(number),
                "RecordKey": key,
            }
            # The newest-first index row rides in the same transaction (store/record_index.py);
            # an upsert, so a row left by the one-off fill cannot block the insert.
            newest = index_entity(record_type, key, numbered, numbered)
            rows: list[tuple[Literal["insert", "upsert"], dict[str, Any]]] = [
                ("insert", numbered),
                ("insert", number_of),
                ("upsert", newest),
                *(("upsert", row) for row in beside),
            ]
            if records.transact(rows):
                stores.last_numbers[record_type] = number
                return number, None
            existing = records.get(record_type, key)
            if existing is not None:
                return None, existing
            number = max(highest(stores, record_type), number) + 1
    raise RuntimeError(f"numbers of {record_type}: too much contention, will retry")


def highest(stores: Stores, record_type: str) -> int:
    """The highest number given out to `record_type` (0 before the first): one request."""
    rows = stores.table(RECORDS).partition(
        record_type,
        ["RowKey"],
        row_from=NUMBER_ROWS,
        row_before=after_prefix(NUMBER_ROWS),  # not the index rows after them
        first=1,
    )
    row = next(rows, None)
    return number_of_row(row["RowKey"]) if row else 0


def numbered(stores: Stores, record_type: str, number: int) -> str | None:
    """The key of record `number` of `record_type`, or None while no record has it."""
    row = stores.table(RECORDS).get(record_type, number_row(number))
    return str(row["RecordKey"]) if row is not None else None
