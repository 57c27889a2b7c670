"""`mailfiler records ...`: list, show, reply to, set the status of, and file mail on records,
through the services the HTTP API uses (same checks, same audit trail, actor source "cli")."""

from __future__ import annotations

import getpass
import json
import re
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ..core.config import Config
from ..services.audit import Actor, audit
from ..services.records import (
    PAGE_MAX,
    RecordError,
    file_manually,
    representation,
    resolve,
    update_record,
    view,
)
from ..services.records import (
    list_records as list_page,
)
from ..services.replies import reply_from_record
from ..store.keys import SIDE_ROWS
from ..store.stores import TIMELINE, Stores

_DISPLAY = re.compile(r"^(?P<prefix>[A-Za-z][A-Za-z0-9]*)-(?P<number>\d+)$")


def cli_actor() -> Actor:
    """Who acts from the command line: the system user, from the source "cli"."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        name = "cli"
    return Actor(name=name[:200], source="cli")


def list_records(
    stores: Stores,
    config: Config,
    *,
    status: str | None = None,
    type_name: str | None = None,
    mailbox: str | None = None,
    contact: str | None = None,
) -> list[dict[str, Any]]:
    """Every record matching the filters (the API's query, page after page: newest first),
    each with its number of messages."""
    rows: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page, token = list_page(
            stores,
            config,
            type_name=type_name,
            status=status,
            contact=contact,
            text=None,
            limit=PAGE_MAX,
            continuation=token,
            mailbox=mailbox,
        )
        rows += page
        if not token:
            break
    counts = Counter(
        e["PartitionKey"]
        for e in stores.table(TIMELINE).all(select=["PartitionKey", "RowKey"])
        if not e["RowKey"].startswith(SIDE_ROWS)  # audit and participant rows are no messages
    )
    for row in rows:
        row["messages"] = counts[f"{row['type']}-{row['key']}"]
    return rows


def find_record(stores: Stores, config: Config, ident: str) -> dict[str, Any]:
    """A record by display id in any case (`CASE-12`, `case-12`), by number (`12`, when one
    record type has it) or by key. Raises RecordError (404) naming what was looked for."""
    ident = ident.strip()
    match = _DISPLAY.fullmatch(ident)
    if match:
        prefix = match["prefix"].upper()
        rtype = next((t for t in config.record_types if t.prefix == prefix), None)
        if rtype is None:
            known = ", ".join(t.prefix for t in config.record_types)
            raise RecordError(
                404, "unknown_prefix", f"no record type has prefix {prefix} ({known})"
            )
        try:
            return resolve(stores, config, rtype.name, match["number"])
        except RecordError as exc:
            if exc.status != 404:
                raise
            # As the person wrote it, in the case records are shown in.
            raise RecordError(404, "not_found", f"no record {prefix}-{match['number']}") from None
    found = []
    for rtype in config.record_types:
        try:
            found.append(resolve(stores, config, rtype.name, ident))
        except RecordError as exc:
            if exc.status != 404:
                raise
    if not found:
        raise RecordError(404, "not_found", f"no record {ident}")
    if len(found) > 1:
        ids = ", ".join(str(r.get("DisplayId")) for r in found)
        raise RecordError(409, "ambiguous", f"{ident} is more than one record: {ids}; name one")
    return found[0]


def show_record(stores: Stores, display_id: str) -> dict[str, Any] | None:
    """A record by exact display id or key, across types (for `mailfiler audit`)."""
    from ..services.records import all_records

    for record in all_records(stores):
        if display_id in (record.get("DisplayId"), record["RowKey"]):
            return representation(stores, record)
    return None


def set_status(
    stores: Stores, config: Config, ident: str, status: str, now: datetime
) -> dict[str, Any]:
    record = find_record(stores, config, ident)
    return update_record(stores, config, record, {"status": status}, cli_actor(), now)


def reply(
    stores: Stores, config: Config, ident: str, body: dict[str, Any], now: datetime
) -> tuple[dict[str, Any], Any]:
    """Queue a reply from the record, as `POST .../reply` does, and audit it."""
    record = find_record(stores, config, ident)
    actor = cli_actor()
    mail = reply_from_record(stores, config, record, body, actor.name)
    audit(stores, actor, "reply", mail.record, f"reply {mail.id} queued", now)
    return view(record), mail


def file_on(
    stores: Stores, config: Config, ident: str, body: dict[str, Any], now: datetime
) -> tuple[dict[str, Any], str]:
    """File a mail Mailfiler has seen on this record, as `POST .../messages` does."""
    record = find_record(stores, config, ident)
    plan = file_manually(stores, config, record, body, cli_actor(), now)
    return view(record), plan.message_key


def print_records(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    if rows:
        print(f"{'ID':<12} {'STATUS':<10} {'MSGS':>4}  {'CREATED':<16}  {'CONTACT':<28} TITLE")
    for row in rows:
        created = (row["created_at"] or "")[:16].replace("T", " ")
        fields = " ".join(f"{k}={v}" for k, v in row["fields"].items())
        print(
            f"{row['id'] or '(numbering)':<12} {row['status'] or '-':<10} {row['messages']:>4}  "
            f"{created:<16}  {(row['contact'] or '-')[:28]:<28} {row['title']}"
            + (f"  {fields}" if fields else "")
        )


def print_record(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, ensure_ascii=False, default=str))
        return
    print(f"{row['id']}  {row['title']}  [{row['status']}]")
    print(f"  contact: {row['contact'] or '-'}  mailbox: {row['mailbox'] or '-'}")
    for name, value in row["fields"].items():
        print(f"  {name}: {value}")
    for entry in row["timeline"]:
        arrow = {"in": "<- in ", "out": "-> out"}.get(entry["direction"] or "", "   ?  ")
        print(f"  {entry['date']}  {arrow}  {entry['from']}")
        print(f"      {entry['subject']}")
        print(f"      {(entry['snippet'] or '')[:100]}")
        for item in entry["attachments"]:
            name = item.get("filename") or "(no name)"
            print(
                f"      attachment: {name} ({item.get('content_type')}, {item.get('size')} bytes)"
            )
        if entry.get("flag"):
            print(f"      FLAGGED: {entry['flag']}")


def now() -> datetime:
    return datetime.now(UTC)


def fail(exc: RecordError) -> int:
    print(f"mailfiler: {exc.message}", file=sys.stderr)
    return 1
