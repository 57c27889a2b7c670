"""Mail Mailfiler sends: notices' templates and limits, and the keys of signed Message-IDs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import SETTING, _Strict
from .records import RecordType, Template


class Signing(_Strict):
    """Keys for our signed Message-IDs: the app settings that hold them, newest first."""

    key_settings: tuple[Annotated[str, Field(pattern=SETTING)], ...] = ()
    message_id_domain: str = "mailfiler.invalid"


DEFAULT_TEMPLATES: dict[str, Template] = {
    "acknowledge": Template(
        subject="[$token] $subject",
        body="Hello,\n\nthank you for your message. We have filed it as $token; please keep "
        "[$token] in the subject when you write about it.\n\nThis is an automatic reply.\n",
    ),
    "reject": Template(
        subject="Re: $subject",
        body="Hello,\n\nyour message could not be accepted: $reason.\n\nThis is an automatic "
        "reply.\n",
    ),
    "forward": Template(
        subject="[discarded] $subject",
        body="A message from $sender to $mailbox was discarded ($reason). It is attached.\n",
    ),
}


class OutboundLimits(_Strict):
    """Automatic mail to one recipient (RFC 3834 loop protection)."""

    window_minutes: int = Field(default=180, ge=1)
    # At most 1,000: a recipient's slots are one table row (64 KiB per property).
    per_window: int = Field(default=10, ge=1, le=1000)
    per_day: int = Field(default=40, ge=1, le=1000)


class Outbound(_Strict):
    limits: OutboundLimits = OutboundLimits()
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=10_000, le=35 * 1024 * 1024)
    templates: dict[Literal["acknowledge", "reject", "forward"], Template] = {}

    def template(self, kind: str, record_type: RecordType | None = None) -> Template:
        if record_type is not None and kind in record_type.templates:
            return record_type.templates[kind]
        return self.templates.get(kind) or DEFAULT_TEMPLATES[kind]  # type: ignore[call-overload]
