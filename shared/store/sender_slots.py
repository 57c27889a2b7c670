"""The per-sender rate limit, exact under concurrency: `per_sender` slots per sender.

A mail is admitted only by claiming a slot in storage, so two workers can never both take the
last one. Time is cut into buckets one window long; slot `i` of bucket `b` (RowKey
`s-<b>-<i>` in the sender's Contacts partition) holds at most one mail (its message-key hash
and arrival time). A mail arriving at `t` may take slot `i` only if no mail in that slot
arrived less than a window before or after `t`; such mails can only be in buckets b-1, b and
b+1. So the mails of one slot are a window apart or more, any window holds at most one of
them, and no window ever holds more than `per_sender` admitted mails.

The claim is one entity-group transaction over those three rows: the chosen one gets the mail,
its neighbours are inserted empty where missing or merged unchanged under their ETag. Any
concurrent claim that could conflict (same slot, neighbouring bucket) writes one of the same
rows, so one of the two transactions fails, reads again and picks another slot.

Time is the mail's arrival as its source reports it (never the sender's Date header), so a
backfill of old mail is counted in its own windows and a live storm in the present one. A mail
that finds its own hash in a slot already holds it (a redelivered map): never a second slot.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableTransactionError

from .keys import CONTACT, SLOT_ROWS, after_prefix, short_hash, slot_row
from .tables import MAX_BATCH_OPERATIONS, Entity, Table

# Each lost race means another claim was committed, so a claimer loses at most about
# `per_sender` of them before every slot is taken; past this, the queue retries the mail.
MAX_CLAIM_ATTEMPTS = 64
# Arrival times before this count as this: bucket numbers stay positive and sortable.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def bucket_of(at: datetime, window: timedelta) -> int:
    return int((max(at, EARLIEST) - EARLIEST) // window) + 1


def _bounds(bucket: int) -> tuple[str, str]:
    """RowKeys of the slots of buckets bucket-1 .. bucket+1: [low, high)."""
    return f"{SLOT_ROWS}{bucket - 1:010d}-", f"{SLOT_ROWS}{bucket + 2:010d}-"


@dataclass
class SenderSlots:
    """The slots around one mail's arrival, as last read."""

    table: Table
    partition: str
    per_sender: int
    window: timedelta
    at: datetime
    rows: dict[str, Entity] = field(default_factory=dict)
    # The sender's guest contact, inserted by the claim's own transaction (it lives in this
    # partition): the filing then writes no contact. Set when the sender has none yet.
    # `contact` is the contact row as read; one inserted this way names the mail whose claim
    # inserted it (`Via`), so that mail's redelivery decides as the first delivery did.
    new_contact: Entity | None = None
    contact_written: bool = False
    contact: Entity | None = None

    def contact_by(self, message_key: str) -> bool:
        """Whether the sender's contact is the guest this mail's own claim inserted."""
        row = self.contact
        return (
            row is not None
            and row.get("Kind") == "guest"
            and row.get("Via") == short_hash(message_key)
        )

    @property
    def bucket(self) -> int:
        return bucket_of(self.at, self.window)

    def read(self) -> None:
        if self.new_contact is not None:
            # The contact too: another mail of this sender may have created it meanwhile.
            self.contact, self.rows = sender_rows(self.table, self.partition, self.at, self.window)
            if self.contact is not None:
                self.new_contact = None
            return
        low, high = _bounds(self.bucket)
        self.rows = {
            r["RowKey"]: r
            for r in self.table.partition(self.partition, row_from=low, row_before=high)
        }

    def in_use(self) -> int:
        """Mails admitted less than a window before or after this one."""
        return sum(1 for row in self.rows.values() if self._near(row))

    def _near(self, row: Entity) -> bool:
        at = row.get("At")
        return (
            bool(row.get("Holder")) and isinstance(at, datetime) and abs(at - self.at) < self.window
        )

    def _free(self, index: int) -> bool:
        """No mail in this slot arrived less than a window before or after this one (a holder
        in this mail's own bucket always did, whatever its row says)."""
        if self.rows.get(slot_row(self.bucket, index), {}).get("Holder"):
            return False
        return not any(
            (row := self.rows.get(slot_row(bucket, index))) is not None and self._near(row)
            for bucket in (self.bucket - 1, self.bucket + 1)
        )

    def claim(self, message_key: str) -> bool:
        """Take a free slot for the message (or find the one it holds); False if none is free."""
        mine = short_hash(message_key)
        start = self.natural_slot()
        for attempt in range(MAX_CLAIM_ATTEMPTS):
            if attempt:
                self.read()
            if any(row.get("Holder") == mine for row in self.rows.values()):
                return True
            # Lazily: the first free slot is near the start unless the sender is busy, and a
            # list of every index cost a large `per_sender` milliseconds per mail.
            order = ((start + k) % self.per_sender for k in range(self.per_sender))
            free = next((i for i in order if self._free(i)), None)
            if free is None:
                return False
            if self._take(free, mine):
                return True
        raise RuntimeError(f"rate limit slots of {self.partition}: too much contention, will retry")

    def natural_slot(self) -> int:
        """Where the mail's claim starts: its arrival's place in the window, cut into
        `per_sender` equal parts. Mails spread over time then take slots in time order, and a
        slot recurs a window later, when it is free again: a sender under the limit is never
        held, in whatever order its mail is claimed (a first sync maps old mail shuffled).
        Starting anywhere else (a hash) could leave a mail's neighbours within the window on
        every slot though they are fewer than `per_sender` in any window."""
        offset = (max(self.at, EARLIEST) - EARLIEST) % self.window
        return min(self.per_sender - 1, int(offset / self.window * self.per_sender))

    def _take(self, index: int, mine: str) -> bool:
        operations: list[tuple[dict[str, Any], str | None]] = []
        for bucket in (self.bucket - 1, self.bucket, self.bucket + 1):
            key = slot_row(bucket, index)
            entity: dict[str, Any] = {"PartitionKey": self.partition, "RowKey": key}
            if bucket == self.bucket:
                entity.update(Holder=mine, At=self.at)
            existing = self.rows.get(key)
            operations.append((entity, existing.get("_etag") if existing else None))
        contact = self.new_contact
        if contact is not None:
            # Inserted: never overwrites a contact.
            operations.append(({**contact, "Via": mine}, None))
        if not self.table.transact_if_unchanged(operations):
            return False
        self.contact_written = contact is not None
        return True


def sender_rows(
    table: Table, partition: str, at: datetime, window: timedelta
) -> tuple[Entity | None, dict[str, Entity]]:
    """The sender's contact row and its slots around `at`, in one request."""
    low, high = _bounds(bucket_of(at, window))
    contact, slots = None, {}
    for row in table.partition(
        partition,
        where="RowKey eq @contact or ( RowKey ge @low and RowKey lt @high )",
        parameters={"contact": CONTACT, "low": low, "high": high},
    ):
        if row["RowKey"] == CONTACT:
            contact = row
        else:
            slots[row["RowKey"]] = row
    return contact, slots


def prune_slots(table: Table, now: datetime, window: timedelta) -> int:
    """Delete slot rows nobody wrote for `keep_for(window)`: a claim reads only the buckets a
    window either side of a mail's arrival, so old rows only grow the table (one to three per
    admitted mail). Selected by the service's own last-write time (`Timestamp`), so the slots
    a backfill of old mail is claiming now are kept whatever their buckets. Returns how many
    were deleted."""
    cutoff = now - keep_for(window)
    by_partition: dict[str, list[tuple[str, str]]] = {}
    for row in table.client.query_entities(
        "RowKey ge @low and RowKey lt @high and Timestamp lt @cutoff",
        parameters={"low": SLOT_ROWS, "high": after_prefix(SLOT_ROWS), "cutoff": cutoff},
        select=["PartitionKey", "RowKey"],
    ):
        key = (str(row["RowKey"]), str(row.metadata.get("etag")))
        by_partition.setdefault(str(row["PartitionKey"]), []).append(key)
    deleted = 0
    for partition, keys in by_partition.items():
        for start in range(0, len(keys), MAX_BATCH_OPERATIONS):
            deleted += _delete_unchanged(
                table, partition, keys[start : start + MAX_BATCH_OPERATIONS]
            )
    return deleted


def _delete_unchanged(table: Table, partition: str, keys: list[tuple[str, str]]) -> int:
    """Delete these rows unless a claim wrote one since it was read (its ETag changed): one
    transaction, or row by row when one of them changed or is gone."""
    guard = {"match_condition": MatchConditions.IfNotModified}
    try:
        table.client.submit_transaction(
            [
                ("delete", {"PartitionKey": partition, "RowKey": rk}, {"etag": etag, **guard})
                for rk, etag in keys
            ]
        )
        return len(keys)
    except TableTransactionError:
        pass
    deleted = 0
    for rk, etag in keys:
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            table.client.delete_entity(partition, rk, etag=etag, **guard)
            deleted += 1
    return deleted


def keep_for(window: timedelta) -> timedelta:
    """How long an unwritten slot row is kept: two windows, and never less than two days."""
    return max(2 * window, timedelta(days=2))
