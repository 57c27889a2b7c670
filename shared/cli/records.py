"""`mailfiler records list|show`: what has been filed, read straight from Table Storage."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ..services.records import all_records, timeline, view
from ..store.keys import SIDE_ROWS
from ..store.stores import TIMELINE, Stores


def list_records(stores: Stores) -> list[dict[str, Any]]:
    counts = Counter(
        e["PartitionKey"]
        for e in stores.table(TIMELINE).all(select=["PartitionKey", "RowKey"])
        if not e["RowKey"].startswith(SIDE_ROWS)  # audit and participant rows are no messages
    )
    rows = []
    for record in all_records(stores):
        row = view(record)
        row["messages"] = counts[f"{row['type']}-{row['key']}"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["type"], r["number"] or 0))


def show_record(stores: Stores, display_id: str) -> dict[str, Any] | None:
    for record in all_records(stores):
        if display_id in (record.get("DisplayId"), record["RowKey"]):
            return {**view(record), "timeline": timeline(stores, record)}
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
        if entry.get("flag"):
            print(f"      FLAGGED: {entry['flag']}")
