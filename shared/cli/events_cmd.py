"""`mailfiler events dead|replay`: dead-lettered webhook deliveries, and sending them again."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from ..services.webhooks import dead_letters, replay
from ..store.stores import Stores


def _when(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def cmd_list_dead(stores: Stores, as_json: bool) -> int:
    """Print every dead delivery (JSON: one object per line); 0 even when there are none."""
    rows = sorted(dead_letters(stores), key=lambda r: (str(r.get("DeadAt")), r["PartitionKey"]))
    for row in rows:
        item = {
            "event": row["PartitionKey"],
            "webhook": row["RowKey"],
            "type": row.get("EventType"),
            "attempts": row.get("Attempts"),
            "status_code": row.get("LastStatusCode"),
            "dead_at": _when(row.get("DeadAt")),
            "reason": row.get("Reason"),
        }
        if as_json:
            print(json.dumps(item, ensure_ascii=False))
        else:
            code = item["status_code"] if item["status_code"] is not None else "-"
            print(
                f"{item['event']}  {item['webhook']:<16} {item['type'] or '?':<16} "
                f"attempts={item['attempts']} last={code}  {item['reason']}"
            )
    if not rows and not as_json:
        print("no dead deliveries")
    return 0


def cmd_replay(stores: Stores, event_id: str | None, all_dead: bool) -> int:
    """Queue dead deliveries again (of one event, or all); the running app delivers them."""
    if bool(event_id) == all_dead:
        print("give an event id or --all (not both)", file=sys.stderr)
        return 2
    count = replay(stores, list(dead_letters(stores, event_id)), now=datetime.now(UTC))
    if event_id and not count:
        print(f"no dead deliveries of event {event_id}", file=sys.stderr)
        return 1
    print(f"queued {count} dead deliveries for replay")
    return 0
