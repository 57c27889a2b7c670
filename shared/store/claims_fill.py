"""Every message index row ("msg") has its claim row beside it: the map stage then takes a won
claim insert as "not filed" and skips reading the index (store/messages.py `claim`). Index rows
written before that rule (mail filed by hand, mail we sent, older builds) may have none; until
their claims are filled and the marker row says so, the map stage reads the index as before.

Fresh storage (no message rows at all) is complete at once. Otherwise `fill_claims` (the daily
retention run) writes the missing claims, then the marker."""

from __future__ import annotations

import logging
import threading
import time
import weakref

from .keys import CLAIM, CLAIMS_MARKER, FILED
from .stores import MESSAGES, Stores
from .tables import Table

log = logging.getLogger(__name__)
RECHECK_SECONDS = 300.0  # how long a process trusts "not complete" before reading the marker again

_complete: weakref.WeakSet[Table] = weakref.WeakSet()
_checked: weakref.WeakKeyDictionary[Table, float] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def claims_complete(stores: Stores) -> bool:
    """Whether every index row is known to have its claim: True for good once seen (one read
    per process), and re-checked every few minutes while not."""
    table = stores.table(MESSAGES)
    if table in _complete:
        return True
    with _lock:
        checked = _checked.get(table)
        if checked is not None and time.monotonic() - checked < RECHECK_SECONDS:
            return False
        _checked[table] = time.monotonic()
    if table.get(*CLAIMS_MARKER) is None and not _empty(table):
        return False
    _mark(table)
    return True


def _empty(table: Table) -> bool:
    """No index row at all (fresh storage; an ingested note does not count): nothing was filed
    before the rule, so the marker is written at once."""
    found = table.client.query_entities(
        "RowKey eq @rk", parameters={"rk": FILED}, results_per_page=1, select=["PartitionKey"]
    )
    return next(iter(found), None) is None


def _mark(table: Table) -> None:
    table.upsert({"PartitionKey": CLAIMS_MARKER[0], "RowKey": CLAIMS_MARKER[1]})
    _complete.add(table)


def fill_claims(stores: Stores) -> int:
    """Insert the claim missing beside each index row (naming the copy and record the index
    names, as `note_filed` does), then the marker. Idempotent: an insert never replaces a
    claim that exists. Returns how many were written."""
    table = stores.table(MESSAGES)
    if table in _complete or table.get(*CLAIMS_MARKER) is not None:
        _complete.add(table)
        return 0
    claimed = {row["PartitionKey"] for row in table.query("RowKey eq @rk", {"rk": CLAIM})}
    written = 0
    for row in table.query("RowKey eq @rk", {"rk": FILED}):
        if row["PartitionKey"] in claimed:
            continue
        inserted = table.insert(
            {
                "PartitionKey": row["PartitionKey"],
                "RowKey": CLAIM,
                "Mailbox": row.get("Mailbox", ""),
                "SourceId": str(row.get("SourceId", ""))[:1000],
                "RecordType": row.get("RecordType", ""),
                "RecordKey": row.get("RecordKey", ""),
            }
        )
        written += inserted is not None
    _mark(table)
    log.info("messages: claims written beside %d index rows filed before the rule", written)
    return written
