"""Ingest: from a source to Blob Storage (raw mail) and the `inbound` queue.

Order matters for "lose nothing": raw bytes first, then the queue message, then the note that
this source id is done. A crash in between re-sends on the next run, and the map stage drops the
duplicate by Message-ID. Before the queue message, a row in the message's own partition of table
Messages says that its Message-ID is on its way: mail that refers to it (a reply, a bounce) and
is mapped first waits for it instead of opening a record of its own.

Sources read and return what they saw (`Sighting`); they store and send nothing. Once
everything a poll listed is queued, the flag and calendar changes it saw go to `task-changes`,
and only then is the mailbox's cursor saved (store/cursors.py): a crash in between sends the
changes again (states, not transitions: harmless), never loses them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from azure.core.exceptions import AzureError

from ..core.contracts import INLINE_RAW_BYTES, InboundMessage
from ..core.message import id_key
from ..core.mime import header_message_id
from ..sources.base import MailboxSource, SourceMessage
from ..store import ingest_notes, messages
from ..store.cursors import Cursors
from ..store.keys import source_key
from ..store.queues import encode
from ..store.stores import INBOUND, INGEST, TASK_CHANGES, Stores

log = logging.getLogger(__name__)
FLUSH_EVERY = 100  # one table transaction records up to 100 ingested ids


@dataclass
class IngestSummary:
    mailbox: str
    seen: int = 0
    queued: int = 0
    skipped: int = 0
    # From a source listing only what changed: ids already ingested that changed since (a
    # move, a flag), for the source's own follow-up.
    changed: list[str] = field(default_factory=list)
    complete: bool = True  # False: a limit stopped the run, or a message could not be read
    failed: list[tuple[str, str]] = field(default_factory=list)
    changes: int = 0  # flag and calendar changes sent to `task-changes`
    more: bool = False  # the source listed only part of what is there: poll again at once
    versions: dict[str, str] = field(default_factory=dict)  # of `changed`, where listed


# An inbound message with its raw mail inline stays under this (JSON bytes; base64 on the
# queue makes it 4/3 of it, under the 64 KiB limit with room for the map stage's `waits`).
INLINE_MESSAGE_BYTES = 46 * 1024


def _with_raw(inbound: InboundMessage, raw: bytes) -> InboundMessage:
    """`inbound` carrying small raw mail too (the map stage then reads no blob), unless the
    rest of the message (a long folder name, many flags) leaves no room for it."""
    if len(raw) > INLINE_RAW_BYTES:
        return inbound
    with_raw = inbound.model_copy(update={"raw": raw})
    return with_raw if len(encode(with_raw)) <= INLINE_MESSAGE_BYTES else inbound


def queue_message(
    stores: Stores, mailbox: str, message: SourceMessage, now: datetime
) -> dict[str, object]:
    """Raw mail to Blob Storage, then its InboundMessage to the queue; returns the Ingest row
    that notes it (the caller writes it, alone or in a batch)."""
    blob = stores.blobs.put_raw(message.raw)
    message_id = header_message_id(message.raw)
    if message_id is not None:
        # Before the queue message: once anything could be mapped after this mail, the map
        # stage can tell that it is on its way (ingested, not yet filed).
        messages.note_ingested(
            stores,
            id_key(message_id),
            mailbox,
            message.source_id,
            folder=message.folder,
            blob=blob,
            now=now,
        )
    inbound = InboundMessage(
        mailbox=mailbox,
        source_id=message.source_id,
        blob=blob,
        folder=message.folder,
        flags=message.flags,
        conversation_id=message.conversation_id,
        received_at=message.received_at,
    )
    stores.queues.send(INBOUND, _with_raw(inbound, message.raw))
    return ingest_notes.row(mailbox, message.source_id, blob, message.folder, now)


def ingest_mailbox(
    stores: Stores,
    mailbox: str,
    source: MailboxSource,
    *,
    now: datetime,
    limit: int | None = None,
    progress: Callable[[int], object] | None = None,
    on_count: Callable[[int], object] | None = None,
    cursors: Cursors | None = None,
) -> IngestSummary:
    """Queue what `source` lists since the mailbox's cursor (`cursors`: where it is kept;
    None for a source that keeps none, e.g. a local import)."""
    summary = IngestSummary(mailbox)
    table = stores.table(INGEST)
    pending: list[dict[str, object]] = []
    sighting = source.poll(cursors.load() if cursors is not None else {})
    if sighting.cursor and cursors is None:
        source.close()
        raise ValueError(f"ingest: mailbox={mailbox} has a cursor and nowhere to keep it")
    refs = sighting.refs
    summary.more = sighting.more
    # A source that lists only what changed (a delta query) is checked id by id; one that
    # lists everything (a folder of files) against the whole partition, read once.
    done: set[str] | None = None if sighting.incremental else ingest_notes.done(table, mailbox)
    summary.seen = len(refs)
    if on_count:
        on_count(summary.seen)
    complete = True
    try:
        for source_id in refs:
            if progress:
                progress(1)
            key = source_key(source_id)
            if done is not None and key in done:
                summary.skipped += 1
                continue
            if done is None and ingest_notes.get(table, mailbox, source_id) is not None:
                summary.skipped += 1
                summary.changed.append(source_id)
                if source_id in sighting.versions:
                    summary.versions[source_id] = sighting.versions[source_id]
                continue
            if limit is not None and summary.queued >= limit:
                complete = False
                break
            try:
                message = source.read(source_id)
            except OSError as exc:
                # One unreadable file must not stop the rest; it is retried on the next run.
                log.warning("ingest: mailbox=%s source_id=%s failed: %s", mailbox, source_id, exc)
                summary.failed.append((source_id, str(exc)))
                continue
            pending.append(queue_message(stores, mailbox, message, now))
            summary.queued += 1
            if done is not None:
                done.add(key)
            if len(pending) >= FLUSH_EVERY:
                table.upsert_batch(pending)
                pending.clear()
        summary.complete = complete and not summary.failed
        if summary.complete:
            if pending:
                table.upsert_batch(pending)
                pending.clear()
            # Changes first, then the cursor (see the module's docstring).
            for change in sighting.changes:
                stores.queues.send(TASK_CHANGES, change)
            summary.changes = len(sighting.changes)
            if cursors is not None:
                cursors.save(sighting.cursor, now)
    finally:
        source.close()
        # Also when storage fails midway: what was queued is noted, so the next poll does not
        # send it again (it would be harmless, the map stage drops duplicates, but wasteful).
        if pending:
            with contextlib.suppress(AzureError):
                table.upsert_batch(pending)
    log.info(
        "ingest: mailbox=%s seen=%d queued=%d skipped=%d failed=%d changes=%d",
        mailbox,
        summary.seen,
        summary.queued,
        summary.skipped,
        len(summary.failed),
        summary.changes,
    )
    return summary
