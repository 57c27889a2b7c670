"""Routes for new conversations, sender policies, the actions of mail classes, rate limits."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import NAME, _Strict

_ADDRESS = re.compile(r"[^@\s]+@[^@\s.][^@\s]*")
_DOMAIN = re.compile(r"[^@\s.][^@\s]*")


class SenderPolicy(_Strict):
    """What to do with mail that would create a record, by who sent it."""

    unknown: Literal["guest", "reject", "discard", "forward"] = "guest"
    allowed_domains: tuple[str, ...] = ()  # empty: every domain may create guests
    forward_to: str | None = None

    @model_validator(mode="after")
    def _forward_has_target(self) -> SenderPolicy:
        if self.unknown == "forward" and not self.forward_to:
            raise ValueError("unknown: forward needs forward_to")
        return self


class Route(_Strict):
    """Mail matching every condition given here goes to `record_type` (or is ignored/discarded).

    `to` matches a recipient address or alias, plus-addressing included (`billing+x@`);
    `sender` an address, `sender_domain` a domain (and its subdomains); `subject` and `body`
    are regular expressions (case-insensitive); `headers` maps a header to a regular
    expression its value must match; `has_attachments` asks for (or against) attachments.
    """

    name: Annotated[str, Field(pattern=NAME)]
    mailbox: str | None = None
    to: str | None = None
    sender: str | None = None
    sender_domain: str | None = None
    subject: str | None = None
    body: str | None = None
    headers: dict[str, str] = {}
    has_attachments: bool | None = None
    action: Literal["file", "ignore", "discard"] = "file"
    record_type: str | None = None
    fields: dict[str, str | int] = {}
    tags: tuple[str, ...] = ()
    senders: SenderPolicy = SenderPolicy()
    acknowledge: bool = False  # send the sender a notice with the new record's token
    # Mail this route matches finds its record by References or conversation id only when the
    # normalised subject matches the record's too (also settable per record type).
    subject_guard: bool = False

    @field_validator("to", "sender", "sender_domain")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @field_validator("to", "sender")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        # A value without local part and domain never matches a recipient: say so now.
        if value is not None and not _ADDRESS.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an email address: write the whole address, "
                "e.g. billing@example.com (billing+anything@example.com matches it too)"
            )
        return value

    @field_validator("sender_domain")
    @classmethod
    def _a_domain(cls, value: str | None) -> str | None:
        if value is not None and not _DOMAIN.fullmatch(value):
            raise ValueError(f"{value!r} is not a domain: write it as example.com (no @)")
        return value

    @field_validator("subject", "body")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("headers")
    @classmethod
    def _header_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"header {name}: not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _type_when_filing(self) -> Route:
        if self.action == "file" and not self.record_type:
            raise ValueError("a route that files needs record_type")
        return self


ClassAction = Literal["file", "file_no_answer", "attach_to_original", "drop"]


class ClassActions(_Strict):
    """What happens to each class of mail (`human` always files).

    `attach_to_original` never opens a record: the mail joins the record of the mail it
    answers or bounces, else it is recorded, not filed. Auto-replies default to it, so an
    out-of-office to unknown or unfiled mail opens nothing.
    """

    auto_reply: ClassAction = "attach_to_original"
    bounce: ClassAction = "attach_to_original"
    feedback: ClassAction = "drop"
    bulk: ClassAction = "drop"
    own_loop: ClassAction = "drop"


class RateLimit(_Strict):
    per_sender: int = Field(default=20, ge=1)
    window_minutes: int = Field(default=120, ge=1)
    allow: tuple[str, ...] = ()  # addresses or @domains never limited

    def allows(self, address: str) -> bool:
        address = address.lower()
        return any(a.lower() in (address, "@" + address.partition("@")[2]) for a in self.allow)
