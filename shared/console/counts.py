"""The records list's index: every record's status, title and last activity, newest first, and
the counts per status, kept a while; each filter's scope (type, mailbox, contact) is cut from it
in memory.

Table Storage can neither count nor sort by anything but its keys: both come from a scan of the
records, 10,000 records in seconds. So the list does not scan on every view: the index is reused
for FRESH_SECONDS, then shown as it was (with its age) while one background thread scans again
(stale-while-revalidate); a status changed in the console changes its row in the index at once,
so its author sees the change counted. Only the first view in a process waits for a scan, which
reads the few columns it needs (not whole records). The list pages through the index (newest
activity first across pages) and shows each record's row from it; the record's own page reads
the record as it is now.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..store.keys import NUMBER_ROWS
from ..store.stores import RECORDS, Stores

log = logging.getLogger(__name__)
FRESH_SECONDS = 30.0
MAX_SCOPES = 64  # per storage account (each up to a few MB); past it the oldest are dropped

Scope = tuple[str, str, str]  # type, mailbox, contact (lower case); "" is any
ALL: Scope = ("", "", "")
Counts = list[tuple[str, int]]
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Brief:
    """A record as the index holds it: what the list filters by, orders by and shows."""

    activity: datetime  # its last activity (UpdatedAt, else CreatedAt)
    type: str
    key: str
    status: str
    title: str
    display_id: str | None = None
    contact: str | None = None
    mailbox: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def row(self) -> dict[str, Any]:
        """The list's row, named as services/records.py's `view` names a record's values."""
        return {
            "type": self.type,
            "key": self.key,
            "id": self.display_id,
            "title": self.title,
            "status": self.status,
            "contact": self.contact,
            "mailbox": self.mailbox,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass
class _Entry:
    counts: Counts
    rows: list[Brief]  # newest activity first
    at: float  # time.monotonic() of the scan
    refreshing: bool = False


_lock = threading.Lock()
# Per Stores object (one per storage account and process), dropped with it.
_cache: dict[int, dict[Scope, _Entry]] = {}


def scope_of(chosen: Mapping[str, str]) -> Scope:
    return (chosen.get("type", ""), chosen.get("mailbox", ""), chosen.get("contact", "").lower())


def scan(stores: Stores, scope: Scope) -> tuple[Counts, list[Brief]]:
    """How many records of the scope have each status (most first), and the records newest
    activity first: one scan."""
    record_type, mailbox, contact = scope
    clauses, params = ["RowKey lt @numbers"], {"numbers": NUMBER_ROWS}
    for column, value in (("PartitionKey", record_type), ("Mailbox", mailbox)):
        if value:
            clauses.append(f"{column} eq @{column.lower()}")
            params[column.lower()] = value
    # Contacts are stored lower case, but compared here as the list's filter compares them.
    columns = [
        "PartitionKey",
        "RowKey",
        "DisplayId",
        "Status",
        "Title",
        "Contact",
        "Mailbox",
        "CreatedAt",
        "UpdatedAt",
    ]
    found = stores.table(RECORDS).client.query_entities(
        " and ".join(clauses), parameters=params, select=columns
    )
    briefs = [
        Brief(
            activity=_when(row.get("UpdatedAt")) or _when(row.get("CreatedAt")) or _NEVER,
            type=str(row["PartitionKey"]),
            key=str(row["RowKey"]),
            status=str(row.get("Status") or "(none)"),
            title=str(row.get("Title") or ""),
            display_id=_text(row.get("DisplayId")),
            contact=_text(row.get("Contact")),
            mailbox=_text(row.get("Mailbox")),
            created_at=_when(row.get("CreatedAt")),
            updated_at=_when(row.get("UpdatedAt")),
        )
        for row in found
        if not contact or str(row.get("Contact") or "").lower() == contact
    ]
    briefs.sort(key=lambda b: (b.activity, b.type, b.key), reverse=True)
    return _counted(briefs), briefs


def _text(value: object) -> str | None:
    return str(value) if value is not None and value != "" else None


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def status_counts(stores: Stores, scope: Scope) -> tuple[Counts, float]:
    """The scope's counts and their age in seconds (0: counted for this request)."""
    counts, _, age = scope_index(stores, scope)
    return counts, age


def scope_index(stores: Stores, scope: Scope) -> tuple[Counts, list[Brief], float]:
    """The scope's counts, its records newest activity first, and their age in seconds (0:
    scanned for this request). Every scope is cut from one index of all records, in memory:
    only the first view in a process waits for a scan, not each new type, mailbox or contact
    filter (a scan of 10,000 records takes seconds)."""
    counts, rows, age = _index(stores, ALL)
    if scope == ALL:
        return counts, rows, age
    record_type, mailbox, contact = scope
    picked = [
        b
        for b in rows
        if (not record_type or b.type == record_type)
        and (not mailbox or b.mailbox == mailbox)
        and (not contact or (b.contact or "").lower() == contact)
    ]
    return _counted(picked), picked, age


def _counted(rows: list[Brief]) -> Counts:
    counts = Counter(b.status for b in rows)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _index(stores: Stores, scope: Scope) -> tuple[Counts, list[Brief], float]:
    now = time.monotonic()
    with _lock:
        entry = _cache.get(id(stores), {}).get(scope)
        if entry is not None and now - entry.at < FRESH_SECONDS:
            return entry.counts, entry.rows, now - entry.at
        again = entry is not None and not entry.refreshing
        if again and entry is not None:
            entry.refreshing = True
    if entry is None:
        counts, rows = scan(stores, scope)
        _keep(stores, scope, counts, rows)
        return counts, rows, 0.0
    if again:
        threading.Thread(
            target=_refresh, args=(stores, scope), name="console-counts", daemon=True
        ).start()
    return entry.counts, entry.rows, now - entry.at


def forget(stores: Stores) -> None:
    """Every scope is counted again on its next view."""
    with _lock:
        _cache.get(id(stores), {}).clear()


def changed(stores: Stores, record_type: str, key: str, status: str, at: datetime) -> None:
    """A record's status changed here: its row in the kept index changes at once (its author
    sees it counted and on top), without a new scan of every record."""
    with _lock:
        entry = _cache.get(id(stores), {}).get(ALL)
        if entry is None:
            return
        rows = [b for b in entry.rows if (b.type, b.key) != (record_type, key)]
        old = [b for b in entry.rows if (b.type, b.key) == (record_type, key)]
        if not old:  # not in the index yet: the next scan brings it
            return
        rows.insert(0, replace(old[0], status=status, activity=at, updated_at=at))
        rows.sort(key=lambda b: (b.activity, b.type, b.key), reverse=True)
        entry.rows, entry.counts = rows, _counted(rows)


def _keep(stores: Stores, scope: Scope, counts: Counts, rows: list[Brief]) -> None:
    with _lock:
        scopes = _cache.get(id(stores))
        if scopes is None:
            scopes = _cache[id(stores)] = {}
            weakref.finalize(stores, _cache.pop, id(stores), None)
        if len(scopes) >= MAX_SCOPES:
            for old in sorted(scopes, key=lambda s: scopes[s].at)[: MAX_SCOPES // 4]:
                del scopes[old]
        scopes[scope] = _Entry(counts, rows, time.monotonic())


def _refresh(stores: Stores, scope: Scope) -> None:
    try:
        _keep(stores, scope, *scan(stores, scope))
    except Exception:
        # The old counts stay (and are tried again on a later view); the list still answers.
        log.exception("console: counting the records of %s failed", scope)
        with _lock:
            entry = _cache.get(id(stores), {}).get(scope)
            if entry is not None:
                entry.refreshing = False
