"""`mailfiler records list|show`: what has been filed, read straight from Table Storage."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ..store.stores import RECORDS, TIMELINE, Stores


def list_records(stores: Stores) -> list[dict[str, Any]]:
    counts = Counter(e["PartitionKey"] for e in stores.table(TIMELINE).all(select=["PartitionKey"]))
    rows = []
    for record in stores.table(RECORDS).all():
        rows.append(
            {
                "id": record.get("DisplayId"),
                "type": record["PartitionKey"],
                "key": record["RowKey"],
                "title": record.get("Title", ""),
                "status": record.get("Status"),
                "messages": counts[f"{record['PartitionKey']}-{record['RowKey']}"],
                "fields": {k[2:]: v for k, v in record.items() if k.startswith("F_")},
            }
        )
    return sorted(rows, key=lambda r: (r["type"], int(str(r["id"] or "-0").rsplit("-", 1)[1])))


def show_record(stores: Stores, display_id: str) -> dict[str, Any] | None:
    for row in list_records(stores):
        if display_id in (row["id"], row["key"]):
            partition = f"{row['type']}-{row['key']}"
            row["timeline"] = [
                {
                    "date": e["Date"].isoformat() if e.get("Date") else None,
                    "from": e.get("From"),
                    "subject": e.get("Subject"),
                    "mailbox": e.get("Mailbox"),
                    "snippet": e.get("Snippet"),
                }
                for e in stores.table(TIMELINE).partition(partition)
            ]
            return row
    return None


def print_records(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    for row in rows:
        fields = " ".join(f"{k}={v}" for k, v in row["fields"].items())
        print(
            f"{row['id'] or '(numbering)':<12} {row['messages']:>3} msg  {row['title']}  {fields}"
        )


def print_record(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, ensure_ascii=False, default=str))
        return
    print(f"{row['id']}  {row['title']}  [{row['status']}]")
    for name, value in row["fields"].items():
        print(f"  {name}: {value}")
    for entry in row["timeline"]:
        print(f"  {entry['date']}  {entry['from']}")
        print(f"      {entry['subject']}")
        print(f"      {(entry['snippet'] or '')[:100]}")
