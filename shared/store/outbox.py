"""Table `Outbox`: what the outbound stage sent or refused, and each recipient's slots for
automatic mail (its rate limit).

- PK `sent` / `refused`, RK the mail's id: one row per mail. The `sent` row is written the
  moment the server took the mail, with `Recorded` false until the stage's bookkeeping is done.
- PK `r-<recipient hash>` (`keys.recipient_partition`), RK `slots`: the automatic mails the
  recipient got lately, as JSON {slot tag: unix seconds} in one property. A slot is taken by
  reading the row, deciding, and writing it only if its ETag is unchanged (else reading again),
  so two workers can never both take the last one.

Why not the per-sender slots of `store/sender_slots.py`: a recipient has two limits (a window
and a day) over a few automatic mails, all judged by `core/outbound.over_limit` on one list of
times, where a sender has one limit that a storm of mail contends for (one row per slot, three
rows a claim). The rows already in storage keep this layout.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.contracts import OutboundMail
from ..core.outbound import Limits, over_limit
from .keys import recipient_partition, short_hash, slot_tag
from .tables import Entity, Table

SENT, REFUSED = "sent", "refused"
SLOTS = "slots"
_CONTENDED = 100  # ETag conflicts in a row before giving up (the queue then retries)
_ID_CHARS = 500  # of a mail id in a RowKey


def sent(table: Table, mail_id: str) -> Entity | None:
    """The mail's `sent` row, if the server took it."""
    return table.get(SENT, mail_id)


def note(table: Table, outcome: str, mail: OutboundMail, now: datetime, **fields: Any) -> None:
    """The mail's row under `outcome` (SENT or REFUSED), merged with `fields`."""
    table.upsert(
        {
            "PartitionKey": outcome,
            "RowKey": mail.id[:_ID_CHARS],
            "Kind": mail.kind,
            "Mailbox": mail.mailbox,
            "To": ", ".join(mail.to)[:2000],
            "At": now,
            **fields,
        }
    )


def note_sent(
    table: Table, mail: OutboundMail, now: datetime, *, message_id: str, answer: str
) -> None:
    """Sent, its bookkeeping still to do (`recorded` marks it done)."""
    note(
        table,
        SENT,
        mail,
        now,
        MessageId=message_id[:1000],
        Answer=answer[:1000],
        Recorded=False,
        RecordType=mail.record.type if mail.record else None,
        RecordKey=mail.record.key if mail.record else None,
    )


def note_refused(table: Table, mail: OutboundMail, now: datetime, why: str) -> None:
    note(table, REFUSED, mail, now, Reason=why[:2000])


def recorded(table: Table, mail_id: str) -> None:
    """The bookkeeping after sending is done: a redelivery does nothing more."""
    table.upsert({"PartitionKey": SENT, "RowKey": mail_id[:_ID_CHARS], "Recorded": True})


def _slots(row: Entity | None, now: datetime, keep: timedelta) -> dict[str, datetime]:
    """The automatic mails a recipient got lately: slot tag -> when its slot was taken."""
    if row is None:
        return {}
    try:
        found = json.loads(str(row.get("Slots") or "{}"))
    except ValueError:
        found = {}
    slots = {}
    for tag, stamp in found.items() if isinstance(found, dict) else ():
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            when = datetime.fromtimestamp(float(stamp), UTC)
            if when > now - keep:
                slots[str(tag)] = when
    return slots


def _write_slots(
    table: Table, address: str, row: Entity | None, slots: dict[str, datetime]
) -> bool:
    """Write the recipient's slots only if nobody changed them since `row` was read."""
    entity = {
        "PartitionKey": recipient_partition(address),
        "RowKey": SLOTS,
        # Whole seconds and 12-hex tags: 1,000 slots (the most the limits allow) fit in a
        # property's 64 KiB.
        "Slots": json.dumps({t: int(w.timestamp()) for t, w in slots.items()}),
    }
    if row is None:
        return table.insert(entity) is not None
    return table.update_if_unchanged(entity, str(row["_etag"]))


def reserve(table: Table, address: str, mail_id: str, now: datetime, limits: Limits) -> str | None:
    """Take one of `address`'s automatic-mail slots for `mail_id`: None when taken (or held by
    this mail already: a redelivery), else why not. ETag-guarded: read, decide, write only if
    unchanged, else read again, so concurrent workers cannot both take the last slot."""
    keep = timedelta(minutes=max(limits.window_minutes, 24 * 60))
    tag = slot_tag(mail_id)
    for _ in range(_CONTENDED):
        row = table.get(recipient_partition(address), SLOTS)
        slots = _slots(row, now, keep)
        if tag in slots:
            return None
        why = over_limit(list(slots.values()), now, limits)
        if why:
            return why
        if _write_slots(table, address, row, {**slots, tag: now}):
            return None
    raise RuntimeError(f"outbound: the slots of {short_hash(address)} stayed contended")


def release(table: Table, addresses: list[str], mail_id: str, now: datetime) -> None:
    """Give back slots taken for a mail that was then refused (it never went out)."""
    tag = slot_tag(mail_id)
    for address in addresses:
        for _ in range(_CONTENDED):
            row = table.get(recipient_partition(address), SLOTS)
            if row is None:
                break
            slots = _slots(row, now, timedelta(days=3650))
            if tag not in slots:
                break
            del slots[tag]
            if _write_slots(table, address, row, slots):
                break
