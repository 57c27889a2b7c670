"""Events for downstream systems: signed webhooks and a Storage queue."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from .base import NAME, SETTING, _Strict

EventType = Literal[
    "record.created",
    "record.updated",
    "message.filed",
    "task.created",
    "task.updated",
    "task.completed",
]


class Webhook(_Strict):
    """A downstream HTTPS endpoint that receives events, signed with HMAC-SHA256."""

    name: Annotated[str, Field(pattern=NAME)]
    url: str
    secret_setting: Annotated[str, Field(pattern=SETTING)]
    events: tuple[EventType, ...] = ()  # empty: every event
    record_types: tuple[str, ...] = ()  # empty: every record type

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        # Plain HTTP only to this machine (local development and tests).
        local = ("http://127.0.0.1", "http://localhost", "http://[::1]")
        if not (value.startswith("https://") or value.startswith(local)):
            raise ValueError("webhook url must be https:// (http:// only for localhost)")
        return value


class Events(_Strict):
    webhooks: tuple[Webhook, ...] = ()
    # Also put every event on this Storage queue, for consumers inside Azure.
    queue: Annotated[str | None, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")] = None
    max_attempts: int = Field(default=8, ge=1, le=50)
