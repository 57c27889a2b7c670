"""What every mailbox adapter gives the pipeline, whatever the server behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..core.contracts import MailboxAction
from ..core.errors import MailfilerError


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


@dataclass(frozen=True)
class ActionResult:
    action: MailboxAction
    done: bool
    detail: str


class MailboxSource(Protocol):
    """A mailbox the pipeline can read from and act on after filing."""

    def refs(self) -> Sequence[str]:
        """Source ids of every message now in the mailbox, oldest first where known."""
        ...

    def read(self, source_id: str) -> SourceMessage: ...

    def commit(self, now: datetime) -> None:
        """Everything `refs` listed is queued: a source with a cursor (a delta link, a UID)
        may move it on. Not called when a read failed or a limit stopped the run."""
        ...

    def close(self) -> None:
        """Let go of connections; called when a poll ends, however it ends."""
        ...

    def apply(self, source_id: str, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        """Carry out mailbox actions for a message that is already safely filed."""
        ...
