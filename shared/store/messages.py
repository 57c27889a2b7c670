"""Table Messages: a message's partition (PartitionKey: the message key) holds its story. Its
RowKeys (store/keys.py): "msg" where it is filed (the message index) and "also-<type>" for
further records, its drop/reject/hold rows (one per copy: put_own_row), "claim" (the copy that
files it), "s-..." (sightings) and, from builds before, "i-..." (copies ingested: ingest now
stores the raw mail under the message key instead, store/blobs.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

from ..core.contracts import FilingPlan, RecordRef
from .keys import (
    ALSO_ROWS,
    CLAIM,
    FILED,
    INGESTED_ROWS,
    SETTLED_ROWS,
    SIGHTING_ROWS,
    copy_row,
    filed_row,
    sighting_row,
    timeline_row,
)
from .stores import MESSAGES, Stores
from .tables import Entity, Table

UNFILED = ("drop", "reject", "hold")
RowKind = Literal["filed", "also", "unfiled", "ingested", "claim", "sighting", "other"]


def kind_of(row_key: str) -> RowKind:
    """What a row of a message's partition is."""
    if row_key == FILED:
        return "filed"
    if row_key.startswith(ALSO_ROWS):
        return "also"
    if row_key.split("-", 1)[0] in UNFILED:
        return "unfiled"  # "drop", or "drop-<hash>" for a further copy (put_own_row)
    if row_key.startswith(INGESTED_ROWS):
        return "ingested"
    if row_key == CLAIM:
        return "claim"
    if row_key.startswith(SIGHTING_ROWS):
        return "sighting"
    return "other"


def rows(stores: Stores, message_key: str, select: list[str] | None = None) -> Iterator[Entity]:
    """The message's partition: one request (its rows are few)."""
    return stores.table(MESSAGES).partition(message_key, select=select)


def filed(stores: Stores, message_key: str) -> Entity | None:
    """The message index's row: where the message is filed, or None."""
    return stores.table(MESSAGES).get(message_key, FILED)


def record_of(row: Mapping[str, Any]) -> RecordRef:
    """The record a "msg", "also-" or claim row names."""
    return RecordRef(type=row["RecordType"], key=row["RecordKey"])


def state(
    stores: Stores, message_key: str, names: dict[RecordRef, str] | None = None
) -> tuple[RecordRef | None, bool]:
    """The record the message is filed on (or None), and whether a copy of it is ingested but
    neither filed nor recorded as not filed yet (on its way). One request when the message is
    settled; else a second asks Blob Storage whether a copy was ingested (store/blobs.py:
    ingest stores raw mail under its message key; builds before wrote an "i-" row here, still
    read). `names` gets the record's display id where the index row carries it (rows of an
    older build do not)."""
    record, ingested, settled = None, False, False
    for row in rows(stores, message_key, ["RowKey", "RecordType", "RecordKey", "DisplayId"]):
        key = str(row["RowKey"])
        if key == FILED:
            record = record_of(row)
            if names is not None and row.get("DisplayId"):
                names[record] = str(row["DisplayId"])
        if key.startswith(SETTLED_ROWS):
            settled = True
        elif key.startswith(INGESTED_ROWS):
            ingested = True
    if settled:
        return record, False
    return record, ingested or bool(stores.blobs.ingested(message_key))


def claim(
    stores: Stores,
    message_key: str,
    mailbox: str,
    source_id: str,
    record: RecordRef,
    now: datetime,
) -> tuple[bool, Entity | None, Entity | None]:
    """Claim the filing of a message for one copy (mailbox and source id): an insert only one
    writer can win. Returns whether this insert won it; the claim of the copy that files it
    when that is another copy (None when this copy holds it: now, or already, a redelivery;
    or the claim went away meanwhile); and, when it lost, the message index row ("msg": where
    the message is filed), read with the claim in one request.

    A won insert also says the message is not filed: every message index row ("msg") has its
    claim (`note_filed` writes one beside it), so the map stage reads the index only when it
    loses (or takes no claim)."""
    messages = stores.table(MESSAGES)
    row = {
        "PartitionKey": message_key,
        "RowKey": CLAIM,
        "Mailbox": mailbox,
        "SourceId": source_id[:1000],
        "RecordType": record.type,
        "RecordKey": record.key,
        "ClaimedAt": now,
    }
    if messages.insert(row) is not None:
        return True, None, None
    # Both rows live in the message's partition: one query instead of two reads.
    found = {
        str(r["RowKey"]): r
        for r in messages.partition(
            message_key,
            where="RowKey eq @claim or RowKey eq @filed",
            parameters={"claim": CLAIM, "filed": FILED},
        )
    }
    held, filed_row = found.get(CLAIM), found.get(FILED)
    if held is None or (held["Mailbox"], held["SourceId"]) == (mailbox, source_id[:1000]):
        return False, None, filed_row
    return False, held, filed_row


def _sighting(plan: FilingPlan, now: datetime) -> Entity:
    return {
        "PartitionKey": plan.message_key,
        "RowKey": sighting_row(plan.mailbox, plan.source_id),
        "Mailbox": plan.mailbox,
        "SourceId": plan.source_id[:1000],
        "Folder": plan.folder,
        "Blob": plan.blob,
        "SeenAt": now,
    }


def note_sighting(stores: Stores, plan: FilingPlan, now: datetime, *, filed_copy: bool) -> None:
    """The plan's copy seen, in one transaction; `filed_copy`: it is the copy the message index
    points at, whose folder the index follows."""
    updates = [_sighting(plan, now)]
    if filed_copy:
        updates.append({"PartitionKey": plan.message_key, "RowKey": FILED, "Folder": plan.folder})
    stores.table(MESSAGES).upsert_batch(updates)


def note_filed(
    stores: Stores, plan: FilingPlan, now: datetime, display_id: str | None = None
) -> None:
    """Where the plan filed its mail, with the copy's sighting, in one transaction: from here
    on the message counts as filed. With `display_id` (the record's CASE-12, which never
    changes), mail that refers to this one learns its record's name without reading it."""
    assert plan.record is not None and plan.entry is not None
    # The index row's claim, in the same transaction: the map stage takes a won claim insert
    # as "not filed" (see `claim`), also for mail filed by hand or sent by us, which the map
    # stage never claimed. A claim the map stage won for this plan names this copy and record
    # already (`plan.claimed`): not written again.
    claim_row: list[Entity] = []
    if plan.primary and not plan.claimed:
        claim_row.append(
            {
                "PartitionKey": plan.message_key,
                "RowKey": CLAIM,
                "Mailbox": plan.mailbox,
                "SourceId": plan.source_id[:1000],
                "RecordType": plan.record.type,
                "RecordKey": plan.record.key,
            }
        )
    stores.table(MESSAGES).upsert_batch(
        [
            *claim_row,
            {
                "PartitionKey": plan.message_key,
                "RowKey": filed_row(plan.record.type, plan.primary),
                "RecordType": plan.record.type,
                "RecordKey": plan.record.key,
                "MessageId": (plan.entry.message_id or "")[:1000],
                "Mailbox": plan.mailbox,
                "SourceId": plan.source_id[:1000],
                "Folder": plan.folder,
                "Blob": plan.blob,
                "Kind": plan.kind,
                "TimelineRow": timeline_row(plan.entry.date, plan.message_key),
                "FiledAt": now,
                "Reasons": "\n".join(plan.reasons)[:4000],
                **({"DisplayId": display_id[:100]} if display_id else {}),
            },
            _sighting(plan, now),
        ]
    )


def unfiled_columns(plan: FilingPlan, now: datetime) -> Entity:
    """A drop, reject or hold decision with its reasons, and what maps the mail again."""
    return {
        "Mailbox": plan.mailbox,
        "SourceId": plan.source_id[:1000],
        "Folder": plan.folder,
        "Blob": plan.blob,
        "Kind": plan.kind,
        "Reasons": "\n".join(plan.reasons)[:4000],
        "At": now,
    }


def note_unfiled(stores: Stores, plan: FilingPlan, now: datetime) -> None:
    row = {"PartitionKey": plan.message_key, "RowKey": plan.action, **unfiled_columns(plan, now)}
    put_own_row(stores.table(MESSAGES), row, plan)


def put_own_row(table: Table, row: Entity, plan: FilingPlan) -> None:
    """Write `row` so that each copy of a mail (its mailbox, source id and raw bytes: the
    plan's) keeps a row of its own: two different mails sharing a Message-ID, or one mail in
    two mailboxes, never overwrite each other, and a redelivery of the same copy rewrites its
    own row.

    The first copy takes the plain RowKey (an insert only one writer can win, so two workers
    cannot both take it); any other copy gets keys.copy_row."""
    if table.insert(row) is not None:
        return
    taken = table.get(row["PartitionKey"], row["RowKey"])
    if taken is None or _copy_of(taken) == _copy_of(row):
        table.upsert(row)  # a redelivery of this copy (or a row deleted meanwhile)
        return
    own = copy_row(str(row["RowKey"]), plan.mailbox, plan.source_id, plan.blob)
    table.upsert({**row, "RowKey": own})


def _copy_of(row: Mapping[str, Any]) -> tuple[object, object, object]:
    return row.get("Mailbox"), row.get("SourceId"), row.get("Blob")
