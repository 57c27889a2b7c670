"""The whole file: `Config`, and the checks that its parts refer to each other correctly."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from .base import _Strict
from .events import Events
from .mailboxes import EwsMailbox, GraphMailbox, GraphSettings, ImapMailbox, LocalMailbox, Mailbox
from .outbound import Outbound, Signing
from .records import FieldBlock, RecordType
from .routes import ClassActions, RateLimit, Route


class Config(_Strict):
    version: Literal[1] = 1
    record_types: tuple[RecordType, ...]
    mailboxes: tuple[Mailbox, ...]
    routes: tuple[Route, ...] = ()
    classes: ClassActions = ClassActions()
    rate_limit: RateLimit = RateLimit()
    signing: Signing = Signing()
    outbound: Outbound = Outbound()
    field_block: FieldBlock = FieldBlock()
    events: Events = Events()
    graph: GraphSettings = GraphSettings()

    @model_validator(mode="after")
    def _references_resolve(self) -> Config:
        problems: list[tuple[str, str]] = []
        if not self.record_types:
            problems.append(("record_types", "declare at least one record type"))
        if not self.mailboxes:
            problems.append(("mailboxes", "declare at least one mailbox"))
        types = {t.name for t in self.record_types}
        _unique(problems, "record_types", [t.name for t in self.record_types])
        _unique(problems, "mailboxes", [m.name for m in self.mailboxes])
        _unique(problems, "routes", [r.name for r in self.routes])
        mailboxes = {m.name for m in self.mailboxes}
        for i, mb in enumerate(self.mailboxes):
            if mb.record_type and mb.record_type not in types:
                problems.append(
                    (f"mailboxes[{i}].record_type", _unknown("record type", mb.record_type, types))
                )
            if mb.record_type is None and not any(
                r.mailbox in (None, mb.name) and r.to is None and r.action == "file"
                for r in self.routes
            ):
                problems.append(
                    (f"mailboxes[{i}]", "needs record_type, or a route without 'to' for it")
                )
        for i, mb in enumerate(self.mailboxes):
            if (
                isinstance(mb, ImapMailbox | EwsMailbox)
                and mb.tasks
                and mb.tasks.record_type not in types
            ):
                problems.append(
                    (
                        f"mailboxes[{i}].tasks.record_type",
                        _unknown("record type", mb.tasks.record_type, types),
                    )
                )
            if isinstance(mb, GraphMailbox):
                if mb.tasks and mb.tasks.record_type not in types:
                    problems.append(
                        (
                            f"mailboxes[{i}].tasks.record_type",
                            _unknown("record type", mb.tasks.record_type, types),
                        )
                    )
                if not mb.polling_only and not self.graph.notification_url:
                    problems.append(
                        (
                            f"mailboxes[{i}]",
                            "change notifications need graph.notification_url (the app's public "
                            "https URL), or set polling_only: true",
                        )
                    )
        for i, route in enumerate(self.routes):
            if route.record_type and route.record_type not in types:
                problems.append(
                    (f"routes[{i}].record_type", _unknown("record type", route.record_type, types))
                )
            if route.mailbox and route.mailbox not in mailboxes:
                problems.append(
                    (f"routes[{i}].mailbox", _unknown("mailbox", route.mailbox, mailboxes))
                )
        if problems:
            raise ValueError("; ".join(f"{p}: {m}" for p, m in problems))
        return self

    def mailbox(self, name: str) -> LocalMailbox | ImapMailbox | GraphMailbox | EwsMailbox | None:
        return next((m for m in self.mailboxes if m.name == name), None)

    def record_type(self, name: str) -> RecordType | None:
        return next((t for t in self.record_types if t.name == name), None)

    def secret_settings(self) -> dict[str, str]:
        """Every app setting the file names for a secret -> where it is named."""
        out: dict[str, str] = {}
        for i, mb in enumerate(self.mailboxes):
            for key, value in mb.model_dump().items():
                if key.endswith("_setting") and value:
                    out[value] = f"mailboxes[{i}].{key}"
                if isinstance(value, dict):  # a nested block: IMAP's oauth
                    for inner, setting in value.items():
                        if inner.endswith("_setting") and setting:
                            out[setting] = f"mailboxes[{i}].{key}.{inner}"
        for i, name in enumerate(self.signing.key_settings):
            out[name] = f"signing.key_settings[{i}]"
        for i, hook in enumerate(self.events.webhooks):
            out[hook.secret_setting] = f"events.webhooks[{i}].secret_setting"
        if any(isinstance(m, GraphMailbox) and not m.polling_only for m in self.mailboxes):
            out[self.graph.client_state_secret_setting] = "graph.client_state_secret_setting"
        return out


def _unique(problems: list[tuple[str, str]], where: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append((f"{where}[{i}].name", f"duplicate name {name!r}"))
        seen.add(name)


def _unknown(what: str, name: str, known: set[str]) -> str:
    return f"unknown {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})"
