"""Record types, their fields and templates, and where `Key: Value` lines are read."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import NAME, _Strict


class FieldSpec(_Strict):
    """A record field that `Key: Value` lines in a mail body may set."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,60}$")]
    type: Literal["text", "int", "date", "choice"] = "text"
    choices: tuple[str, ...] = ()
    on_update: bool = Field(default=False, description="a reply may change it")

    @model_validator(mode="after")
    def _choices_for_choice(self) -> FieldSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError("type 'choice' needs choices")
        return self


class Template(_Strict):
    """`$token`, `$subject`, `$reason`, `$sender`, `$mailbox`, `$record_type` are filled in."""

    subject: str
    body: str


class RecordType(_Strict):
    name: Annotated[str, Field(pattern=NAME)]
    prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,9}$")]
    title: str | None = None
    fields: tuple[FieldSpec, ...] = ()
    # Who may add mail to an existing record: anyone, only addresses already on the record's
    # mail (From, To, Cc), or only known contacts.
    updates_from: Literal["anyone", "thread", "contacts"] = "anyone"
    # A match by header (References, conversation) counts only if the subject matches too.
    subject_guard: bool = False
    statuses: tuple[str, ...] = ("new", "open", "pending", "closed")
    closed_statuses: tuple[str, ...] = ("closed",)
    # What a reply to a closed record does: reopen it (to `reopen_status`), open a new record
    # for the reply's conversation, or just attach.
    reply_when_closed: Literal["reopen", "new", "attach"] = "reopen"
    reopen_status: str = "open"
    templates: dict[Literal["acknowledge", "reject", "forward"], Template] = {}

    @model_validator(mode="after")
    def _closed_are_statuses(self) -> RecordType:
        unknown = [s for s in self.closed_statuses if s not in self.statuses]
        if unknown:
            raise ValueError(f"closed_statuses {unknown} are not among statuses")
        if "new" not in self.statuses:
            raise ValueError("statuses must include 'new', the status of a new record")
        if self.reopen_status not in self.statuses:
            raise ValueError(f"reopen_status {self.reopen_status!r} is not among statuses")
        return self

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name.lower() == name.lower()), None)


class FieldBlock(_Strict):
    """Where `Key: Value` lines are read: between these marker lines, or (without markers) at
    the very top of the new text."""

    start: str | None = None
    end: str | None = None
