"""The newest-first index of table Records (Azure's "intra-partition secondary index" pattern).

Beside each record, in its type's partition, one index row whose RowKey sorts newest first:
`t-` + the record's CreatedAt (microseconds since 1970) counted down + its number counted down
+ its key. It carries the columns a list filters on and shows (`LISTED`, the `F_` fields) and
the record's key (`RecordKey`). Every write of those columns to a record writes its index row in
the same transaction (same partition: no extra request), so a list read from the index is as
current as the records. CreatedAt and the number never change, so a record's index row keeps
its key.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .keys import INDEX_ROWS
from .tables import Entity

RECORD_KEY = "RecordKey"
# What the lists show and filter on (services/records.py view), besides the `F_` fields.
LISTED = frozenset(
    {"Title", "Status", "Contact", "Mailbox", "Tags", "DisplayId", "Number", "CreatedAt"}
    | {"UpdatedAt"}
)
_FIELD = "F_"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_SPAN = 10**16  # microseconds: to the year 2286, in 16 digits
_NUMBER_SPAN = 10**12  # record numbers stay below (store/keys.py number_row)


def listed(columns: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a record write that its index row carries too."""
    return {k: v for k, v in columns.items() if k in LISTED or k.startswith(_FIELD)}


def index_row(created_at: Any, number: Any, key: str) -> str:
    """The RowKey of a record's index row: newest first, then the highest number first."""
    micros = 0
    if isinstance(created_at, datetime):
        when = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
        micros = (when - _EPOCH) // timedelta(microseconds=1)
    micros = min(max(micros, 0), _TIME_SPAN - 1)
    count = number if isinstance(number, int) and not isinstance(number, bool) else 0
    count = min(max(count, 0), _NUMBER_SPAN - 1)
    return f"{INDEX_ROWS}{_TIME_SPAN - 1 - micros:016d}-{_NUMBER_SPAN - 1 - count:012d}-{key}"


def index_entity(
    record_type: str, key: str, current: Mapping[str, Any], changes: Mapping[str, Any]
) -> Entity:
    """The index row's write that goes with writing `changes` to a record that is `current`
    (the row as read, or as inserted): only the changed listed columns, so two writers'
    transactions leave record and index row alike, column by column."""
    return {
        "PartitionKey": record_type,
        "RowKey": index_row(current.get("CreatedAt"), current.get("Number"), key),
        RECORD_KEY: key,
        **{k: current[k] for k in ("CreatedAt", "Number", "DisplayId") if k in current},
        **listed(changes),
    }


def is_index_row(row_key: str) -> bool:
    return row_key.startswith(INDEX_ROWS)
