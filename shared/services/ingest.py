"""Ingest: from a source to Blob Storage (raw mail) and the `inbound` queue.

Order matters for "lose nothing": raw bytes first, then the queue message, then the note that
this source id is done. A crash in between re-sends on the next run, and the map stage drops the
duplicate by Message-ID. The raw bytes are stored under the Message-ID's key (store/blobs.py), so
once they are, the message is known to be on its way: mail that refers to it (a reply, a bounce)
and is mapped first waits for it instead of opening a record of its own. (Builds before wrote a
row for that in table Messages: one storage call per mail more.)

Sources read and return what they saw (`Sighting`); they store and send nothing. Once
everything a poll listed is queued, the flag and calendar changes it saw go to `task-changes`,
and only then is the mailbox's cursor saved (store/cursors.py): a crash in between sends the
changes again (states, not transitions: harmless), never loses them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from azure.core.exceptions import AzureError

from ..core.contracts import BUNDLE_MAILS, INLINE_RAW_BYTES, InboundMessage
from ..core.errors import MailfilerError
from ..core.message import id_key
from ..core.mime import header_message_id
from ..sources.base import MailboxSource, SourceMessage
from ..store import ingest_notes
from ..store.blobs import IngestedCopy
from ..store.cursors import Cursors
from ..store.keys import source_key
from ..store.queues import encode
from ..store.stores import INBOUND, INGEST, TASK_CHANGES, Stores
from ..store.tables import Entity

log = logging.getLogger(__name__)
FLUSH_EVERY = 100  # one table transaction records up to 100 ingested ids
INGEST_THREADS = 8  # storage calls of an ingest in flight at once
# An incremental listing this long is checked against the Ingest partition read once, unless
# the partition holds more than ROWS_PER_LOOKUP rows per id listed (a page of 1,000 RowKeys
# costs about what ten lookups do: past that, a lookup per id is cheaper).
PARTITION_READ_FROM = 100
ROWS_PER_LOOKUP = 100


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
    limited: bool = False  # `limit` stopped the run with more mail to queue
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
    inbound = _store(stores, mailbox, message, now)
    stores.queues.send(INBOUND, _with_raw(inbound, message.raw))
    return ingest_notes.row(mailbox, message.source_id, inbound.blob, message.folder, now)


def _store(stores: Stores, mailbox: str, message: SourceMessage, now: datetime) -> InboundMessage:
    """The step before the queue message: the raw mail stored, under its Message-ID's key when
    it has one, which also notes the message as on its way (ingested, not yet filed: mail that
    refers to it waits for it; store/messages.py `state`); returns the InboundMessage to send."""
    message_id = header_message_id(message.raw)
    copy = IngestedCopy(
        mailbox=mailbox,
        source_id=message.source_id,
        folder=message.folder,
        ingested_at=now,
    )
    blob = stores.blobs.put_raw(
        message.raw, id_key(message_id) if message_id is not None else None, copy
    )
    return InboundMessage(
        mailbox=mailbox,
        source_id=message.source_id,
        blob=blob,
        folder=message.folder,
        flags=message.flags,
        conversation_id=message.conversation_id,
        received_at=message.received_at,
    )


class _Abandoned(MailfilerError):
    """A bundle left unsent because an earlier one failed (its mail is queued on the next
    poll)."""


# What a bundle's mails may add up to (their JSON), beside the bundle's own few bytes.
BUNDLE_ROOM = INLINE_MESSAGE_BYTES - 64
SENDS_IN_FLIGHT = 2  # bundles sent or waiting to be (memory: their inline raw mail)


def bundle_body(mails: Sequence[bytes]) -> bytes:
    """One `inbound` message for `mails` (each an InboundMessage's JSON, as `encode` made it):
    a single mail as it is, several as an InboundBundle. The JSON objects are joined as they
    are, not parsed and written again (their inline raw mail is most of the bytes)."""
    if len(mails) == 1:
        return mails[0]
    return b'{"v":1,"kind":"bundle","mails":[' + b",".join(mails) + b"]}"


class _Pipeline:
    """The storage calls of many messages in flight at once, each message's own in the order
    that loses nothing (raw mail and the note that its Message-ID is on its way, then the queue
    message, then its Ingest row), and across messages as the map stage needs it: a message is
    queued only once every earlier one is noted as on its way, so mail that refers to an
    earlier one waits for it as it did when ingest sent one call at a time.

    Threads store and note; the stored mails are taken in the source's order into bundles
    (contracts.InboundBundle: up to BUNDLE_MAILS a queue message, within its size), which one
    sender thread queues one after another, in order (an import is filed in the order
    `explain` numbers it). A bundle is sent once full, and the last one when the listing ends.

    The main thread reads the source (not thread-safe) and submits; `rows` hands back the
    Ingest rows of messages queued, in order, never one whose queue message was not sent."""

    def __init__(
        self, stores: Stores, mailbox: str, now: datetime, *, threads: int, bundle: int
    ) -> None:
        self._stores, self._mailbox, self._now = stores, mailbox, now
        self._most = max(1, min(bundle, BUNDLE_MAILS))
        stores.queues.client(INBOUND)  # built before any thread sends (clients are cached)
        name = f"ingest-{mailbox}"[:40]
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._sender = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-send")
        self._window = threads * 4  # messages being stored at most (memory: their raw bytes)
        self._stored: deque[Future[tuple[bytes, Entity]]] = deque()
        self._bundle: list[tuple[bytes, Entity]] = []
        self._bundle_bytes = 0
        self._sends: deque[Future[list[Entity]]] = deque()
        self._send_failed = threading.Event()  # later bundles are abandoned
        self._broken = False  # a message failed to store: nothing after it is queued

    def submit(self, message: SourceMessage) -> list[Entity]:
        """Start `message`; returns the rows of earlier messages queued meanwhile."""
        self._stored.append(self._pool.submit(self._store, message))
        return self.rows(wait=len(self._stored) >= self._window)

    def rows(self, *, wait: bool = False, every: bool = False) -> list[Entity]:
        """The rows of the oldest messages that are queued (`wait`: store at least one more;
        `every`: queue everything, the last bundle too); raises the first failure, in order."""
        while self._stored and (self._stored[0].done() or wait or every):
            future = self._stored.popleft()
            wait = False
            try:
                mail, row = future.result()
            except BaseException:
                self._broken = True
                raise
            self._add(mail, row)
        if every:
            self._send_bundle()
        out: list[Entity] = []
        while self._sends and (
            self._sends[0].done() or every or len(self._sends) > SENDS_IN_FLIGHT
        ):
            out.extend(self._sends.popleft().result())
        return out

    def finish(self) -> list[Entity]:
        """After a failure: let what is in flight end, queue what was stored before the first
        failure, and return the rows of what was queued, for the caller to note."""
        self._pool.shutdown(wait=True)
        while self._stored and not self._broken:
            future = self._stored.popleft()
            if future.exception() is not None:
                break
            self._add(*future.result())
        self._stored.clear()
        self._send_bundle()
        self._sender.shutdown(wait=True)
        rows = [row for f in self._sends if f.exception() is None for row in f.result()]
        self._sends.clear()
        return rows

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._sender.shutdown(wait=True)

    def _store(self, message: SourceMessage) -> tuple[bytes, Entity]:
        """On a pool thread: raw mail stored and noted; the mail's queue JSON and Ingest row."""
        inbound = _store(self._stores, self._mailbox, message, self._now)
        row = ingest_notes.row(
            self._mailbox, message.source_id, inbound.blob, message.folder, self._now
        )
        return encode(_with_raw(inbound, message.raw)), row

    def _add(self, mail: bytes, row: Entity) -> None:
        if self._bundle and (
            len(self._bundle) >= self._most or self._bundle_bytes + len(mail) + 1 > BUNDLE_ROOM
        ):
            self._send_bundle()
        self._bundle.append((mail, row))
        self._bundle_bytes += len(mail) + 1

    def _send_bundle(self) -> None:
        if self._bundle:
            bundle, self._bundle, self._bundle_bytes = self._bundle, [], 0
            self._sends.append(self._sender.submit(self._send, bundle))

    def _send(self, bundle: list[tuple[bytes, Entity]]) -> list[Entity]:
        """On the sender thread: one queue message for the bundle; its rows once it is sent."""
        if self._send_failed.is_set():
            raise _Abandoned(f"{len(bundle)} mails")
        try:
            self._stores.queues.send_bytes(INBOUND, bundle_body([mail for mail, _ in bundle]))
        except BaseException:
            self._send_failed.set()
            raise
        return [row for _, row in bundle]


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
    threads: int = INGEST_THREADS,
    bundle: int = BUNDLE_MAILS,
) -> IngestSummary:
    """Queue what `source` lists since the mailbox's cursor (`cursors`: where it is kept;
    None for a source that keeps none, e.g. a local import). `threads` storage calls go at
    once; the queue messages go in the source's order, in bundles of up to `bundle` mails (1:
    a message each, as live mail comes; see `_Pipeline`)."""
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
    # A long listing of new mail (an IMAP first sync) is checked against the partition read
    # once, as long as that costs fewer requests than a lookup an id (None: it would not).
    known: set[str] | None = None
    if sighting.incremental and len(refs) >= PARTITION_READ_FROM:
        known = ingest_notes.done(table, mailbox, at_most=len(refs) * ROWS_PER_LOOKUP)
    summary.seen = len(refs)
    if on_count:
        on_count(summary.seen)
    complete = True
    pipeline: _Pipeline | None = None
    try:
        for source_id in refs:
            if progress:
                progress(1)
            key = source_key(source_id)
            if done is not None and key in done:
                summary.skipped += 1
                continue
            if done is None and (
                key in known
                if known is not None
                else ingest_notes.get(table, mailbox, source_id) is not None
            ):
                summary.skipped += 1
                summary.changed.append(source_id)
                if source_id in sighting.versions:
                    summary.versions[source_id] = sighting.versions[source_id]
                continue
            if limit is not None and summary.queued >= limit:
                complete = False
                summary.limited = True
                break
            try:
                message = source.read(source_id)
            except OSError as exc:
                # One unreadable file must not stop the rest; it is retried on the next run.
                log.warning("ingest: mailbox=%s source_id=%s failed: %s", mailbox, source_id, exc)
                summary.failed.append((source_id, str(exc)))
                continue
            if pipeline is None:
                pipeline = _Pipeline(stores, mailbox, now, threads=threads, bundle=bundle)
            pending.extend(pipeline.submit(message))
            summary.queued += 1
            if done is not None:
                done.add(key)
            # Full transactions only: the rows come back in bursts of any size, and a burst
            # of 101 sent whole would be two transactions, one of a single row.
            while len(pending) >= FLUSH_EVERY:
                table.upsert_batch(pending[:FLUSH_EVERY])
                del pending[:FLUSH_EVERY]
        if pipeline is not None:
            pending.extend(pipeline.rows(every=True))
            pipeline.close()
            pipeline = None
        summary.complete = complete and not summary.failed
        if summary.complete:
            while pending:
                table.upsert_batch(pending[:FLUSH_EVERY])
                del pending[:FLUSH_EVERY]
            # Changes first, then the cursor (see the module's docstring).
            for change in sighting.changes:
                stores.queues.send(TASK_CHANGES, change)
            summary.changes = len(sighting.changes)
            if cursors is not None:
                cursors.save(sighting.cursor, now)
    finally:
        if pipeline is not None:  # a failure: what is in flight ends, what was queued is noted
            pending.extend(pipeline.finish())
        source.close()
        # Also when storage fails midway: what was queued is noted, so the next poll does not
        # send it again (it would be harmless, the map stage drops duplicates, but wasteful).
        with contextlib.suppress(AzureError):
            while pending:
                table.upsert_batch(pending[:FLUSH_EVERY])
                del pending[:FLUSH_EVERY]
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
