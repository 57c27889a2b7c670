"""One message's story in table Messages (and its copies ingested, in Blob Storage): where it is
filed and why, or why not, and every sighting. Read by `mailfiler messages show` and
`GET /api/messages/{key}`; a mail named by its mailbox and source id (it may have no Message-ID)
by `mailfiler messages show --source ID` and `GET /api/messages?source_id=ID`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..core.contracts import RecordRef
from ..core.message import MAX_HEX_ID_BYTES, id_key
from ..core.mime import parse_message
from ..core.record_names import name_records
from ..store import messages as message_rows
from ..store import records
from ..store.keys import source_key
from ..store.stores import INGEST, Stores

STATUS = {"drop": "dropped", "reject": "rejected", "hold": "held"}
# A stored message key: the hex of a Message-ID, or `h`/`s` + SHA-256 (shared/core/message.py).
# No stored hex key is longer than MAX_HEX_ID_BYTES bytes of Message-ID (longer ids are hashed).
_KEY = re.compile(rf"^(?:(?:[0-9a-f]{{2}}){{1,{MAX_HEX_ID_BYTES}}}|[hs][0-9a-f]{{64}})$")


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _reasons(stores: Stores, row: dict[str, Any]) -> list[str]:
    """The stored reasons, with records named as people name them (CASE-12, not a key)."""
    numbers: dict[RecordRef, str | None] = {}

    def display_id(ref: RecordRef) -> str | None:
        if ref not in numbers:
            numbers[ref] = records.display_id(stores, ref)
        return numbers[ref]

    text = str(row.get("Reasons") or "")
    return [name_records(r, display_id) for r in text.split("\n") if r]


def _copy(row: dict[str, Any], when: str, column: str) -> dict[str, Any]:
    """One copy of the mail (its mailbox, source id, folder and raw mail) and when (`column`)."""
    return {
        "mailbox": row.get("Mailbox"),
        "source_id": row.get("SourceId"),
        "folder": row.get("Folder"),
        when: _iso(row.get(column)),
        "blob": row.get("Blob"),
    }


def key_candidates(key: str) -> list[str]:
    """The message keys KEY may stand for, most likely first."""
    text = key.strip()
    if text.startswith("<") and text.endswith(">"):
        return [id_key(text[1:-1])]
    out = [text] if _KEY.match(text) else []
    if text:
        out.append(id_key(text))
    return list(dict.fromkeys(out))


def _message_id_of(key: str) -> str | None:
    """The Message-ID a hex key was made from (other keys are one-way hashes)."""
    if not re.fullmatch(r"(?:[0-9a-f]{2})+", key):
        return None
    try:
        return bytes.fromhex(key).decode("utf-8")
    except UnicodeDecodeError:
        return None


def message_status(stores: Stores, key: str) -> dict[str, Any] | None:
    """Everything table Messages knows about one message, or None if it knows nothing."""
    for candidate in key_candidates(key):
        rows = list(message_rows.rows(stores, candidate))
        copies = stores.blobs.ingested(candidate)
        if rows or copies:
            break
    else:
        return None
    out: dict[str, Any] = {
        "key": candidate,
        "message_id": _message_id_of(candidate),
        "filed": None,
        "also": [],
        "unfiled": [],
        "sightings": [],
        "ingested": [],
    }
    claimed = False
    for row in sorted(rows, key=lambda r: str(r["RowKey"])):
        rk = str(row["RowKey"])
        kind = message_rows.kind_of(rk)
        if kind in ("filed", "also"):
            ref = RecordRef(type=str(row["RecordType"]), key=str(row["RecordKey"]))
            filed = {
                "record_type": ref.type,
                "record_key": ref.key,
                "display_id": records.display_id(stores, ref),
                "mailbox": row.get("Mailbox"),
                "source_id": row.get("SourceId"),
                "folder": row.get("Folder"),
                "kind": row.get("Kind"),
                "filed_at": _iso(row.get("FiledAt")),
                "blob": row.get("Blob"),
                "reasons": _reasons(stores, row),
            }
            if kind == "filed":
                out["filed"] = filed
                out["message_id"] = row.get("MessageId") or out["message_id"]
            else:
                out["also"].append(filed)
        elif kind == "unfiled":
            # "drop", or "drop-<hash>" for a further copy sharing the key
            out["unfiled"].append(
                {
                    "action": rk.split("-", 1)[0],
                    **_copy(row, "at", "At"),
                    "kind": row.get("Kind"),
                    "reasons": _reasons(stores, row),
                }
            )
        elif kind == "ingested":
            # A copy ingested (written before it was queued): on its way until a row above
            # settles the message.
            out["ingested"].append(_copy(row, "ingested_at", "IngestedAt"))
        elif kind == "claim":
            claimed = True
        elif kind == "sighting":
            out["sightings"].append(_copy(row, "seen_at", "SeenAt"))
    noted = {(c["mailbox"], c["source_id"]) for c in out["ingested"]}
    for copy in copies:
        # Stored under the message key by ingest, before it was queued (store/blobs.py).
        if (copy.mailbox, copy.source_id) not in noted:
            out["ingested"].append(
                {
                    "mailbox": copy.mailbox,
                    "source_id": copy.source_id,
                    "folder": copy.folder,
                    "ingested_at": _iso(copy.ingested_at),
                    "blob": copy.blob,
                }
            )
    out["sightings"].sort(key=lambda s: s["seen_at"] or "")
    out["unfiled"].sort(key=lambda u: u["at"] or "")
    out["ingested"].sort(key=lambda i: i["ingested_at"] or "")
    if out["filed"]:
        out["status"] = "filed"
    elif out["unfiled"]:
        out["status"] = STATUS[out["unfiled"][-1]["action"]]
    elif out["ingested"] or claimed:
        # Ingested (or being filed by the worker that claimed it), not settled yet: queued,
        # waiting for mail it refers to, or in a poison queue.
        out["status"] = "pending"
    else:
        out["status"] = None
    return out


def messages_by_source(
    stores: Stores, mailboxes: Iterable[str], source_id: str
) -> list[dict[str, Any]]:
    """The mail each of `mailboxes` ingested under `source_id` (its IMAP UID, Graph id, file
    name...), with its story in table Messages. The Ingest row names the raw mail's blob; the
    message key is read from the mail itself, as the map stage reads it, so mail without a
    Message-ID (keyed by its bytes' SHA-256) is found as surely as any other. `message` is None
    while the mail is ingested but not yet mapped (or in a poison queue)."""
    found: list[dict[str, Any]] = []
    for mailbox in dict.fromkeys(mailboxes):
        row = stores.table(INGEST).get(mailbox, source_key(source_id))
        if row is None:
            continue
        blob = row.get("Blob")
        raw = stores.blobs.get(str(blob)) if blob else None
        key = (
            parse_message(raw, mailbox=mailbox, source_id=source_id).key
            if raw is not None
            else None
        )
        found.append(
            {
                "mailbox": mailbox,
                "source_id": row.get("SourceId") or source_id,
                "folder": row.get("Folder"),
                "ingested_at": _iso(row.get("IngestedAt")),
                "blob": blob,
                "key": key,
                "message": message_status(stores, key) if key else None,
            }
        )
    return found
