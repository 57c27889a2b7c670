"""Versioned messages that travel between stages on Storage queues.

Each carries `v`; a stage refuses a version it does not know (ContractError, straight to the
poison queue with that reason) instead of guessing. Keep them small: queue messages are at most
64 KiB, so bodies stay in Blob Storage and only references travel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SNIPPET_CHARS = 500
TEXT_INLINE = 8000
MAX_ENTRY_ATTACHMENTS = 50
FLAG_CHARS = 1000
# Addresses of one mail kept as the record's participants: with the entry and its audit row they
# fit one 100-operation transaction.
MAX_PARTICIPANTS = 50
# Raw mail up to this size rides in its `inbound` message as well as in Blob Storage: base64
# twice (the field, then the queue's encoding) it stays well inside a queue message's 64 KiB.
INLINE_RAW_BYTES = 24 * 1024


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InboundMessage(_Contract):
    """Queue `inbound`: one message a source has seen, its raw bytes already in Blob Storage."""

    # `raw` is base64 in JSON (any bytes, not only UTF-8).
    model_config = ConfigDict(
        extra="ignore", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    v: Literal[1] = 1
    mailbox: str
    source_id: str
    blob: str
    folder: str | None = None
    flags: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    conversation_id: str | None = None
    received_at: datetime | None = None
    # How often the map stage has put this mail back to wait for mail it refers to (ingested,
    # not yet filed); bounded, so a referenced mail that never files cannot hold it for ever.
    waits: int = Field(default=0, ge=0)
    # Small mail travels inline too (the same bytes as `blob`, which is still written: the
    # record's raw mail): the map stage reads it from here and saves a Blob Storage read.
    raw: bytes | None = Field(default=None, max_length=INLINE_RAW_BYTES)


# A first sync sends its mail in bundles of up to this many `InboundMessage`s a queue message
# (one send, receive and delete for all of them); more would lengthen an invocation and what a
# redelivered bundle maps again, for little: the queue's share of a mail's calls is 3 / n.
BUNDLE_MAILS = 32


class InboundBundle(_Contract):
    """Queue `inbound`: mail of one ingest, mapped one after another in this order. A mail
    that fails in a bundle goes back to the queue alone, with its own retries and poison."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    v: Literal[1] = 1
    kind: Literal["bundle"] = "bundle"
    mails: tuple[InboundMessage, ...] = Field(min_length=1, max_length=BUNDLE_MAILS)


class FlagChange(_Contract):
    """Queue `task-changes`: what a polled message's flag is now (a state, not a transition,
    so a repeat changes nothing); its task follows once the mail is filed."""

    v: Literal[1] = 1
    kind: Literal["flag"] = "flag"
    mailbox: str
    message_id: str
    status: Literal["flagged", "notFlagged", "complete"]
    start: datetime | None = None
    due: datetime | None = None
    attempt: int = 0


class EventChange(_Contract):
    """Queue `task-changes`: a polled calendar item was created, changed or deleted; a task
    linked to it follows its times."""

    v: Literal[1] = 1
    kind: Literal["event"] = "event"
    mailbox: str
    event_id: str
    change: Literal["created", "updated", "deleted"]
    subject: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    task_property: str | None = None  # Mailfiler's marker on events it created for a task


class RecordRef(_Contract):
    type: str
    key: str


class AttachmentInfo(_Contract):
    filename: str | None = None
    content_type: str
    size: int
    blob: str | None = None  # the stored copy (map stage), under its SHA-256
    note: str | None = None  # why it was stored as bytes, or not stored


class TimelineEntry(_Contract):
    direction: Literal["in", "out"] = "in"
    kind: str = "human"
    message_key: str
    message_id: str | None = None
    subject: str = ""
    from_: str = Field(default="", alias="from")
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    date: datetime | None = None
    snippet: str = Field(default="", max_length=SNIPPET_CHARS)
    # The reply text, whole up to TEXT_INLINE characters; longer text is in Blob Storage
    # (`text_blob`), so a long mail never breaks the 64 KiB queue or property limits.
    text: str = Field(default="", max_length=TEXT_INLINE)
    text_blob: str | None = None
    attachments: tuple[AttachmentInfo, ...] = Field(default=(), max_length=MAX_ENTRY_ATTACHMENTS)
    # Why the mail is suspect (a From claiming our address from outside), shown with the entry.
    flag: str | None = Field(default=None, max_length=FLAG_CHARS)

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")


class MailboxAction(_Contract):
    action: Literal["mark_read", "move", "categorize", "delete"]
    folder: str | None = None
    category: str | None = None


class ActionsJob(_Contract):
    """Queue `mailbox-actions`: run one mail's after-filing actions in one mailbox. The work
    itself is the mailbox's pending-actions row (store/pending_actions.py); `job` names the one
    message allowed to run it now, so a stale or duplicate message changes nothing."""

    v: Literal[1] = 1
    mailbox: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    message_key: str = Field(min_length=1, max_length=400, pattern=r"^[0-9a-z]+$")
    job: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")


Action = Literal["create", "attach", "sighting", "drop", "hold", "reject"]


class Notice(_Contract):
    """Mail Mailfiler would send about this message. Recorded here, sent by the outbound stage
    (a later issue): `sent` stays False until then."""

    kind: Literal["acknowledge", "reject", "forward"]
    to: str
    reason: str
    sent: bool = False


class ContactUpdate(_Contract):
    """A change to the contact store: a new guest, or an address that bounces for good."""

    address: str
    name: str = ""
    kind: Literal["guest", "undeliverable"]
    detail: str = ""


class DsnInfo(_Contract):
    action: str | None = None
    status: str | None = None
    final_recipient: str | None = None
    original_message_id: str | None = None


class FilingPlan(_Contract):
    """Queue `filing`: what the map stage decided; the file stage carries it out, idempotently."""

    v: Literal[1] = 1
    action: Action
    message_key: str
    mailbox: str
    source_id: str
    blob: str
    folder: str | None = None
    record: RecordRef | None = None
    title: str | None = None
    fields: dict[str, str | int] = {}
    status: str | None = None  # a status to set, e.g. reopening a closed record
    # The message starts its conversation: its title and fields win over a reply's that happened
    # to create the record first.
    root: bool = False
    entry: TimelineEntry | None = None
    mailbox_actions: tuple[MailboxAction, ...] = ()
    reasons: tuple[str, ...] = ()
    kind: str = "human"  # the classification: human, auto_reply, bounce, feedback, bulk, own_loop
    dsn: DsnInfo | None = None
    tags: tuple[str, ...] = ()
    notices: tuple[Notice, ...] = ()
    contacts: tuple[ContactUpdate, ...] = ()
    sender: str | None = None  # lower-case address, for the per-sender rate limit
    conversation_id: str | None = None
    # Addresses on this mail (From, To, Cc), kept per record (rows `~p-`): they have standing
    # on it. Empty when the sender itself has none, so no one gains standing by writing.
    participants: tuple[str, ...] = ()
    # False for the second and later records one mail opens (two aliases, two record types):
    # the message index points at the first; the others are noted beside it.
    primary: bool = True
    # The record's display id (CASE-12) when the map stage read its row: the file stage then
    # names it in its log line, notices and events without reading the row again.
    display_id: str | None = None
    # The RowKey of the record's newest-first index row (from its CreatedAt and number, which
    # never change) when the map stage read its row: the file stage writes fields, tags or a
    # status to record and index row without reading the record again. None (a plan of an
    # older build, a record not created yet when mapped): the file stage reads the record.
    index_row: str | None = None
    # A sighting of a copy other than the one the message index points at (which copy files a
    # message never changes once claimed), when the map stage knew it: the file stage then
    # records it without reading the index. None: the file stage reads the index.
    filed_copy: bool | None = None
    # The map stage inserted the message's claim for this copy and record (it won the insert):
    # the message index's transaction need not write the claim again. False (a claim taken
    # by a delivery before, a plan of an older build, mail filed by hand): it writes it.
    claimed: bool = False


class OutboundAttachment(_Contract):
    """A stored attachment of the record's mail, sent again with a reply."""

    blob: str
    filename: str
    content_type: str = "application/octet-stream"


class OutboundMail(_Contract):
    """Queue `outbound`: one mail to send from a mailbox. `id` is stable (a notice: the
    message key and the notice's index; a reply: chosen by the API), so a redelivered message
    is sent once."""

    v: Literal[1] = 1
    id: str
    kind: Literal["acknowledge", "reject", "forward", "reply"]
    mailbox: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    record: RecordRef | None = None
    display_id: str | None = None
    subject: str | None = None  # replies: as written; notices: from the template
    body: str | None = None
    reason: str = ""
    in_reply_to: str | None = None  # the Message-ID answered
    references: tuple[str, ...] = ()
    original_subject: str = ""
    original_sender: str = ""
    original_blob: str | None = None  # a forward attaches the original
    attachments: tuple[OutboundAttachment, ...] = ()
    message_key: str | None = None  # the mail a notice answers (its Notices rows)
    notice_row: str | None = None
    actor: str = "mailfiler"


class Event(_Contract):
    """Queue `events`: something downstream systems hear about. `id` is stable: a redelivered
    plan emits the same event again, and consumers drop ids they have seen."""

    v: Literal[1] = 1
    id: str
    type: str  # record.created | record.updated | message.filed | task.*
    occurred_at: datetime
    record: RecordRef | None = None
    display_id: str | None = None
    message_key: str | None = None
    data: dict[str, str | int | bool | None] = {}


class PoisonMessage(_Contract):
    """Queue `<name>-poison`: a message that failed for good, with why. Raw mail stays in Blob."""

    v: Literal[1] = 1
    queue: str
    stage: str
    reason: str
    dequeue_count: int
    body: str = Field(description="the original message body, as text (or base64, see below)")
    # True when the body was not UTF-8 (a compressed Graph notification batch): base64 of it.
    body_base64: bool = False
    # True when the body as text would not fit a queue message: base64 of its zlib (replay
    # decompresses), so a plan near the 64 KiB limit still reaches the poison queue whole.
    body_zlib: bool = False
    blob: str | None = None
    failed_at: datetime
