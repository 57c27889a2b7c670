"""What every mailbox adapter gives the pipeline, whatever the server behind it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..core.contracts import EventChange, FlagChange, MailboxAction
from ..core.errors import MailfilerError
from ..store.cursors import Cursor


@dataclass(frozen=True)
class SourceMessage:
    """One message as a source hands it over: an id stable within the mailbox, and raw bytes."""

    source_id: str
    raw: bytes
    folder: str | None = None
    flags: tuple[str, ...] = ()
    received_at: datetime | None = None
    # The server's own conversation id where it has one (Graph's conversationId, Gmail's
    # X-GM-THRID): follow-ups whose References were stripped still find their record.
    conversation_id: str | None = None


class SourceBusy(MailfilerError):
    """The server asked us to come back later (EWS ErrorServerBusy): the poll ends now and is
    scheduled again after `retry_after` seconds, never by sleeping inside the function."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SourceUnavailable(MailfilerError):
    """A transient failure talking to the server (connection lost, timeout, a 5xx answer): the
    work is retried later as it is (idempotent), never dropped and never counted as done."""


class NotSupported(MailfilerError):
    """The source cannot do this at all (a local folder cannot send, Graph keeps no APPENDed
    copy): no retry will change it."""


@dataclass(frozen=True)
class Sighting:
    """What one poll of a source saw. The source stores and sends nothing: the poll stage
    queues `refs`, sends `changes` to `task-changes`, then saves `cursor` (in that order)."""

    refs: Sequence[str]  # source ids listed, oldest first where known
    # True: `refs` lists only what changed since the cursor (ids already ingested that come
    # again changed); False: everything there is (checked against the Ingest table at once).
    incremental: bool = False
    # Flag and calendar changes for the tasks stage: states, not transitions (harmless twice).
    changes: Sequence[FlagChange | EventChange] = ()
    # Where the next poll starts, per folder: opaque to stages, persisted by store/cursors.py.
    # Only folders that moved are here.
    cursor: Cursor = field(default_factory=dict)
    more: bool = False  # a limit stopped the listing: poll again at once, not at the next tick
    # The version (Graph changeKey) a listed id was seen with, for a change handed on.
    versions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionResult:
    action: MailboxAction
    done: bool
    detail: str


class MailboxSource(Protocol):
    """A mailbox the pipeline can read from and act on after filing."""

    def poll(self, cursor: Cursor) -> Sighting:
        """List what is new since `cursor` (as an earlier Sighting left it; {} the first
        time). Reads the server only: no queue message, no table row."""
        ...

    def read(self, source_id: str) -> SourceMessage:
        """One message `poll` listed (a message gone since raises an OSError)."""
        ...

    def close(self) -> None:
        """Let go of connections; called when a poll ends, however it ends."""
        ...

    def apply(self, source_id: str, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        """Carry out mailbox actions for a message that is already safely filed."""
        ...

    def send_mime(self, raw: bytes) -> str:
        """Send a finished message through the mailbox's own server (Graph sendMail, EWS
        SendAndSaveCopy), keeping a copy in Sent; returns the server's answer in words.
        `NotSupported` where the mailbox sends by SMTP instead."""
        ...

    def append(self, folder: str, raw: bytes) -> None:
        """Keep a copy of mail sent by SMTP in `folder` (IMAP APPEND, marked seen).
        `NotSupported` where the server keeps its own copy or there is no server."""
        ...
