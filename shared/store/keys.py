"""Row and partition keys that more than one stage computes: one definition each."""

from __future__ import annotations

import hashlib
from datetime import datetime

from ..core.contracts import RecordRef


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


# Outbox (store/outbox.py): PK "sent"/"refused" holds one row per mail id; a recipient's automatic
# mail slots are one row (RK "slots") in a partition of its own, named by the address's hash.
def recipient_partition(address: str) -> str:
    return "r-" + short_hash(address.strip().lower())


def slot_tag(mail_id: str) -> str:
    """What marks a mail's slot among a recipient's slots: 12 hex (1,000 fit in a property)."""
    return short_hash(mail_id, length=12)


# Notices (store/notices.py): PK the message key, RK the notice's place in its plan and its kind.
def notice_row(index: int, kind: str) -> str:
    return f"{index}-{kind}"


# Retention (store/retention.py): PK the day a mail's deletion falls due, so a run reads the
# partitions up to today.
def due_day(when: datetime) -> str:
    return f"{when:%Y%m%d}"


# Links of Outlook events to tasks (store/tasks.py), in GraphState: one partition per mailbox.
def event_link_partition(mailbox: str) -> str:
    return f"evlink-{mailbox}"


def event_link_row(event_id: str) -> str:
    return short_hash(event_id)


# A record's partition in the Timeline table holds its entries (RowKeys start with a digit) and,
# after them under "~", rows kept beside them: "~audit-..." (its audit trail) and "~p-..." (the
# addresses on its thread), so filing a message writes all three in one transaction.
SIDE_ROWS = "~"


def participant_row(address: str) -> str:
    return "~p-" + contact_row(address)


def record_partition(record: RecordRef) -> str:
    """A record's partition in the Timeline table (entries, audit rows, participants)."""
    return f"{record.type}-{record.key}"


def timeline_row(date: datetime | None, message_key: str) -> str:
    """A mail's entry on a record's timeline: in date order, one per mail."""
    stamp = date.strftime("%Y%m%dT%H%M%S") if date else "0"
    return f"{stamp}-{short_hash(message_key, length=24)}"


# The audit trail: one row in the day's partition of table Audit, and one beside the record's
# timeline ("~audit-" sorts after every entry, whose RowKeys start with digits).
AUDIT_ROWS = "~audit-"


def audit_day(at: datetime) -> str:
    return f"day-{at:%Y%m%d}"


def audit_row(actor: str, action: str, detail: str, at: datetime, once: str | None) -> str:
    """An act's RowKey in its day (after AUDIT_ROWS beside the record). With `once` (what makes
    the act unique), the same act keeps its key whenever it is written again."""
    tail = short_hash(actor, action, once or detail, "" if once else at.isoformat())[:12]
    return f"{at:%Y%m%dT%H%M%S%f}-{tail}"


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


# After the number rows, under "t-", the newest-first index (store/record_index.py): one row per
# record, RowKey its creation time and number counted down, then its key. Rows before "n-" are
# the records themselves, so `RowKey lt "n-"` still reads records only.
INDEX_ROWS = "t-"
# Where the index's one-off fill for records written before it is noted as done (table Records;
# "~" sorts after every RowKey a reader of records asks for).
INDEX_MARKER = ("~index", "~filled")
# After those, under "~audit-" + the act's audit_row (which starts with its time): the day's
# audit row of a record's creation from mail, kept beside the record and inserted in the
# record's own transaction, so creating a record makes no separate write to table Audit. The
# day's trail reads these (one range per record type) with the Audit table's day partition.
RECORD_AUDIT_ROWS = "~audit-"


def record_audit_day(at: datetime) -> str:
    """The RowKey prefix of a day's creation rows in a record type's partition."""
    return f"{RECORD_AUDIT_ROWS}{at:%Y%m%d}"


# A message's partition in the Messages table (PartitionKey: the message key) holds, besides
# "msg" (where it is filed), "also-..." (further records), its drop/reject/hold rows and its
# sightings ("s-..."):
# - "i-..." one row per copy ingested (mailbox and source id), written by builds before this
#   one before the copy was queued, so mail that refers to it could wait for it (ingest now
#   stores the raw mail under the message key instead: store/blobs.py; these rows still count);
# - "claim": the one copy that files the message, inserted by the map stage (an insert only
#   one worker can win); every other copy becomes a sighting.
INGESTED_ROWS = "i-"
CLAIM = "claim"
FILED = "msg"
ALSO_ROWS = "also-"
SIGHTING_ROWS = "s-"
# Rows that end a message's way through the pipeline: filed, or recorded as not filed.
SETTLED_ROWS = ("msg", "also-", "drop", "reject", "hold")


def ingested_row(mailbox: str, source_id: str) -> str:
    return INGESTED_ROWS + short_hash(mailbox, source_id)


def filed_row(record_type: str, primary: bool) -> str:
    """Where a message is filed: "msg" (the message index), or beside it for a further record."""
    return FILED if primary else ALSO_ROWS + record_type


def sighting_row(mailbox: str, source_id: str) -> str:
    """One copy of a mail (its mailbox and source id): its sighting in table Messages, and the
    key of its rows in MailboxActions and Retention."""
    return SIGHTING_ROWS + short_hash(mailbox, source_id)


def action_row(mailbox: str, source_id: str, action: str, index: int) -> str:
    return f"{sighting_row(mailbox, source_id)}-{action}-{index}"


def copy_row(row_key: str, mailbox: str, source_id: str, blob: str) -> str:
    """The RowKey a further copy of a mail (another mailbox, source id or raw bytes) takes when
    the plain one is another copy's (store/messages.py put_own_row)."""
    return f"{row_key[:400]}-{short_hash(mailbox, source_id, blob, length=24)}"


# Table Held: a mailbox's partition, a row per held message.
def held_row(message_key: str) -> str:
    return message_key[:400]


def after_prefix(prefix: str) -> str:
    """The first RowKey past every key that starts with `prefix` ("s-" -> "s."): the end of a
    prefix's range in a RowKey query."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def source_key(source_id: str) -> str:
    return hashlib.sha256(source_id.encode("utf-8", "surrogateescape")).hexdigest()[:40]


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


# An IMAP mailbox's OAuth sign-in (store/imap_tokens.py): one row in its partition of ImapState,
# beside its cursor rows ("folder-...").
IMAP_OAUTH_ROW = "oauth"


# Graph subscriptions (store/subscriptions.py) in GraphState: one partition holds them all (a
# pass reads them in pages and renews 100 to a transaction), and another the nonces the
# webhook checks (RK the nonce).
SUBSCRIPTIONS = "subscription"
NONCES = "nonce"


def subscription_row(mailbox: str, kind: str) -> str:
    """A mailbox's subscription of one kind (mail, folder-<name>, events)."""
    return f"{mailbox}~{kind}"


def subscription_rows(mailbox: str) -> tuple[str, str]:
    """The RowKey range (from, before) of a mailbox's subscriptions."""
    return f"{mailbox}~", f"{mailbox}~~"


# Where the one-off fill of claim rows beside message index rows written before every index
# row had its claim is noted as done (table Messages; no message key starts with "~").
CLAIMS_MARKER = ("~claims", "~filled")
