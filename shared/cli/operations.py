"""`mailfiler messages show` and `mailfiler poison list|replay`: what an operator needs.

`messages show` reads one message's rows in table Messages (where it was filed and why, or why
not, and every sighting). `poison list` shows what failed for good and why; `poison replay`
sends the original bodies back to their queue once the cause is fixed. Every stage is idempotent
(README, "Why the pipeline cannot lose or duplicate mail"), so replaying a message twice, or one
that meanwhile succeeded, files nothing twice.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from ..services.messages import key_candidates, message_status, messages_by_source
from ..services.poison import poison_entries, replay
from ..store.stores import INGEST, MESSAGES, QUEUES, Stores, poison

UNFILED = ("drop", "reject", "hold")
# A stored message key: the hex of a Message-ID, or `h`/`s` + SHA-256 (shared/core/message.py).
_KEY = re.compile(r"^(?:(?:[0-9a-f]{2})+|[hs][0-9a-f]{64})$")


def _print_filed(label: str, filed: dict[str, Any]) -> None:
    record = filed["display_id"] or "(not numbered yet)"
    print(f"{label} {record} ({filed['record_type']} {filed['record_key']})")
    print(f"  mailbox {filed['mailbox']}, folder {filed['folder'] or '-'}, kind {filed['kind']}")
    print(f"  filed at {filed['filed_at']}")
    print(f"  source {filed['source_id']}")
    for reason in filed["reasons"]:
        print(f"  - {reason}")


def cmd_messages_show(stores: Stores, key: str, as_json: bool) -> int:
    status = message_status(stores, key)
    if status is None:
        tried = ", ".join(key_candidates(key)) or "nothing"
        print(
            f"no message {key} in table {MESSAGES} (looked up key {tried}); "
            "give a message key or a Message-ID, or --source ID",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps(status, ensure_ascii=False, default=str))
        return 0
    _print_status(status)
    return 0


def cmd_messages_by_source(
    stores: Stores, mailboxes: list[str], source_id: str, as_json: bool
) -> int:
    """The mail each mailbox ingested under SOURCE_ID, and its story (mail without a
    Message-ID has no other name an operator can give)."""
    found = messages_by_source(stores, mailboxes, source_id)
    if not found:
        print(
            f"no mail with source id {_safe(source_id)} was ingested by "
            f"{', '.join(mailboxes) or 'any mailbox'} (table {INGEST})",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps(found, ensure_ascii=False, default=str))
        return 0
    for i, copy in enumerate(found):
        if i:
            print()
        print(
            f"source {_safe(copy['source_id'])} in mailbox {copy['mailbox']}, "
            f"ingested at {copy['ingested_at']}, blob {copy['blob']}"
        )
        if copy["message"] is not None:
            _print_status(copy["message"])
        elif copy["key"] is not None:
            print(f"message {copy['key']}: not mapped yet (queued, or see `mailfiler poison list`)")
        else:
            print("its raw mail is not in Blob Storage")
    return 0


def _safe(text: str) -> str:
    """A source id as printed: ids come from mailboxes, so control characters are shown escaped."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _print_status(status: dict[str, Any]) -> None:
    print(f"message {status['key']}")
    print(f"  Message-ID: {status['message_id'] or '(none)'}")
    if status["filed"]:
        _print_filed("filed on", status["filed"])
    for also in status["also"]:
        _print_filed("also filed on", also)
    for unfiled in status["unfiled"]:
        print(f"{unfiled['action']} (not filed), at {unfiled['at']}")
        print(
            f"  mailbox {unfiled['mailbox']}, folder {unfiled['folder'] or '-'}, "
            f"kind {unfiled['kind']}"
        )
        print(f"  source {unfiled['source_id']}")
        for reason in unfiled["reasons"]:
            print(f"  - {reason}")
    if status.get("status") == "pending":
        print("pending: ingested, not filed yet (queued, waiting for mail it refers to, or see")
        print("  `mailfiler poison list`)")
        for copy in status.get("ingested", []):
            print(
                f"  ingested {copy['ingested_at']}  {copy['mailbox']}  {copy['folder'] or '-'}  "
                f"{_safe(str(copy['source_id']))}"
            )
    elif not status["filed"] and not status["unfiled"]:
        print("not filed (only sightings are recorded)")
    print(f"sightings: {len(status['sightings'])}")
    for sighting in status["sightings"]:
        print(
            f"  {sighting['seen_at']}  {sighting['mailbox']}  {sighting['folder'] or '-'}  "
            f"{sighting['source_id']}"
        )


# --- poison queues ------------------------------------------------------------------------------


def _check_queue(queue: str) -> bool:
    if queue in QUEUES:
        return True
    print(f"unknown queue {queue!r} (known: {', '.join(QUEUES)})", file=sys.stderr)
    return False


def cmd_poison_list(stores: Stores, queue: str, as_json: bool) -> int:
    if not _check_queue(queue):
        return 2
    entries = poison_entries(stores, queue)
    if as_json:
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False))
        return 0
    depth = stores.queues.depth(poison(queue)) or 0
    shown = f" (the first {len(entries)} shown)" if depth > len(entries) else ""
    print(f"{poison(queue)}: {depth} message(s){shown}")
    for entry in entries:
        print(
            f"  {entry['failed_at'] or '-'}  stage {entry['stage'] or '-'}  "
            f"attempts {entry['attempts'] or '-'}  blob {entry['blob'] or '-'}"
        )
        print(f"      {entry['reason']}")
    return 0


def cmd_poison_replay(stores: Stores, queue: str, count: int | None) -> int:
    if not _check_queue(queue):
        return 2
    if count is not None and count < 1:
        print("--count must be at least 1", file=sys.stderr)
        return 2
    moved = replay(stores, queue, count)
    left = stores.queues.depth(poison(queue)) or 0
    print(f"replayed {moved} message(s) from {poison(queue)} to {queue}; {left} left")
    return 0
