"""The records list's counts per status, kept a while per scope (type, mailbox, contact).

Table Storage cannot count: the counts are a scan of the scope's records, 10,000 records in
seconds. So the list does not scan on every view: a scope's counts are reused for
FRESH_SECONDS, then shown as they were (with their age) while one background thread counts
again (stale-while-revalidate); a status changed in the console drops them, so its author
sees the change counted. Only a scope's first view in a process waits for its scan, which
reads the two columns it needs (not whole records) and leaves the type and mailbox filters to
the service.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ..store.keys import NUMBER_ROWS
from ..store.stores import RECORDS, Stores

log = logging.getLogger(__name__)
FRESH_SECONDS = 30.0
MAX_SCOPES = 512  # per storage account; past it the oldest scopes are dropped

Scope = tuple[str, str, str]  # type, mailbox, contact (lower case); "" is any
Counts = list[tuple[str, int]]


@dataclass
class _Entry:
    counts: Counts
    at: float  # time.monotonic() of the scan
    refreshing: bool = False


_lock = threading.Lock()
# Per Stores object (one per storage account and process), dropped with it.
_cache: dict[int, dict[Scope, _Entry]] = {}


def scope_of(chosen: Mapping[str, str]) -> Scope:
    return (chosen.get("type", ""), chosen.get("mailbox", ""), chosen.get("contact", "").lower())


def count(stores: Stores, scope: Scope) -> Counts:
    """How many records of the scope have each status, most first: one scan."""
    record_type, mailbox, contact = scope
    clauses, params = ["RowKey lt @numbers"], {"numbers": NUMBER_ROWS}
    for column, value in (("PartitionKey", record_type), ("Mailbox", mailbox)):
        if value:
            clauses.append(f"{column} eq @{column.lower()}")
            params[column.lower()] = value
    # Contacts are stored lower case, but compared here as the list's filter compares them.
    rows = stores.table(RECORDS).client.query_entities(
        " and ".join(clauses), parameters=params, select=["Status", "Contact"]
    )
    counts = Counter(
        str(row.get("Status") or "(none)")
        for row in rows
        if not contact or str(row.get("Contact") or "").lower() == contact
    )
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def status_counts(stores: Stores, scope: Scope) -> tuple[Counts, float]:
    """The scope's counts and their age in seconds (0: counted for this request)."""
    now = time.monotonic()
    with _lock:
        entry = _cache.get(id(stores), {}).get(scope)
        if entry is not None and now - entry.at < FRESH_SECONDS:
            return entry.counts, now - entry.at
        again = entry is not None and not entry.refreshing
        if again and entry is not None:
            entry.refreshing = True
    if entry is None:
        counts = count(stores, scope)
        _keep(stores, scope, counts)
        return counts, 0.0
    if again:
        threading.Thread(
            target=_refresh, args=(stores, scope), name="console-counts", daemon=True
        ).start()
    return entry.counts, now - entry.at


def forget(stores: Stores) -> None:
    """A record changed here: every scope is counted again on its next view."""
    with _lock:
        _cache.get(id(stores), {}).clear()


def _keep(stores: Stores, scope: Scope, counts: Counts) -> None:
    with _lock:
        scopes = _cache.get(id(stores))
        if scopes is None:
            scopes = _cache[id(stores)] = {}
            weakref.finalize(stores, _cache.pop, id(stores), None)
        if len(scopes) >= MAX_SCOPES:
            for old in sorted(scopes, key=lambda s: scopes[s].at)[: MAX_SCOPES // 4]:
                del scopes[old]
        scopes[scope] = _Entry(counts, time.monotonic())


def _refresh(stores: Stores, scope: Scope) -> None:
    try:
        _keep(stores, scope, count(stores, scope))
    except Exception:
        # The old counts stay (and are tried again on a later view); the list still answers.
        log.exception("console: counting the records of %s failed", scope)
        with _lock:
            entry = _cache.get(id(stores), {}).get(scope)
            if entry is not None:
                entry.refreshing = False
