"""Row and partition keys that more than one stage computes: one definition each."""

from __future__ import annotations

import hashlib


def short_hash(*parts: str, length: int = 32) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:length]


def contact_row(address: str) -> str:
    return address.lower().encode("utf-8", "surrogateescape").hex()[:1000]


def conversation_row(conversation_id: str) -> str:
    return short_hash(conversation_id)


# A contact's partition in the Contacts table holds the contact itself (RowKey "contact") and,
# under "s-", the per-sender rate limit's slots (store/sender_slots.py): one read gives the map
# stage both.
CONTACT = "contact"
SLOT_ROWS = "s-"


def contact_partition(address: str) -> str:
    return short_hash(address.lower())


def slot_row(bucket: int, index: int) -> str:
    """Slot `index` of the window-long time bucket `bucket`: rows sort by bucket, so the
    buckets around a mail are one range of RowKeys."""
    return f"{SLOT_ROWS}{bucket:010d}-{index:05d}"


# A record's partition in the Timeline table holds its entries (RowKeys start with a digit) and,
# after them under "~", rows kept beside them: "~audit-..." (its audit trail) and "~p-..." (the
# addresses on its thread), so filing a message writes all three in one transaction.
SIDE_ROWS = "~"


def participant_row(address: str) -> str:
    return "~p-" + contact_row(address)


# A record type's partition in the Records table holds its records (RowKeys are hex keys) and,
# after them under "n-", one row per number handed out (number -> record key). The record and
# its number's row are inserted in one transaction: a number is never given twice, and never
# lost to a record that turned out to exist already. The rows count down, so the first one is
# the highest number.
NUMBER_ROWS = "n-"
_NUMBER_SPAN = 10**12


def number_row(number: int) -> str:
    return f"{NUMBER_ROWS}{_NUMBER_SPAN - number:012d}"


def number_of_row(row_key: str) -> int:
    return _NUMBER_SPAN - int(row_key.removeprefix(NUMBER_ROWS))


# A message's partition in the Messages table (PartitionKey: the message key) holds, besides
# "msg" (where it is filed), "also-..." (further records), its drop/reject/hold rows and its
# sightings ("s-..."):
# - "i-..." one row per copy ingested (mailbox and source id), written before the copy is
#   queued: the Message-ID is known to be on its way, so mail that refers to it can wait for it;
# - "claim": the one copy that files the message, inserted by the map stage (an insert only
#   one worker can win); every other copy becomes a sighting.
INGESTED_ROWS = "i-"
CLAIM = "claim"
# Rows that end a message's way through the pipeline: filed, or recorded as not filed.
SETTLED_ROWS = ("msg", "also-", "drop", "reject", "hold")


def ingested_row(mailbox: str, source_id: str) -> str:
    return INGESTED_ROWS + short_hash(mailbox, source_id)


def after_prefix(prefix: str) -> str:
    """The first RowKey past every key that starts with `prefix` ("s-" -> "s."): the end of a
    prefix's range in a RowKey query."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# Poll cursors (store/cursors.py), one row per watched folder in the mailbox's partition of its
# kind's state table: IMAP and EWS under "folder-" (EWS folder names compare without case),
# Graph's delta links under "delta-" (the same partition holds Graph's move targets under
# "folder-" and its message notes under "msg-").
CURSOR_ROWS = {"imap": "folder-", "ews": "folder-", "graph": "delta-"}


def cursor_row(kind: str, folder: str) -> str:
    if kind == "graph":
        return CURSOR_ROWS[kind] + folder
    return CURSOR_ROWS[kind] + short_hash(folder.lower() if kind == "ews" else folder)


# What Graph remembers per mailbox in GraphState (store/graph_notes.py), in the mailbox's
# partition: a move target's folder id, and per message the version last seen.
def graph_target_row(path: str) -> str:
    return "folder-" + short_hash(path)


def graph_message_row(source_id: str) -> str:
    return "msg-" + short_hash(source_id)
