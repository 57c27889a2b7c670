"""The whole file: `Config`, and the checks that its parts refer to each other correctly."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import ValidationInfo, model_validator

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
    def _references_resolve(self, info: ValidationInfo) -> Config:
        # `parse_config` runs these itself, over every part that parsed, so that one pass
        # reports them beside the parts' own problems (it asks to skip them here).
        if info.context and info.context.get("cross_checks") is False:
            return self
        problems = cross_check(
            Parts(
                record_types=list(enumerate(self.record_types)),
                mailboxes=list(enumerate(self.mailboxes)),
                routes=list(enumerate(self.routes)),
                graph=self.graph,
                type_names=[t.name for t in self.record_types],
                mailbox_names=[m.name for m in self.mailboxes],
                route_names=[r.name for r in self.routes],
                all_routes=True,
            )
        )
        if problems:
            raise ValueError("; ".join(f"{_dotted(loc)}: {m}" for loc, m in problems))
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


Loc = tuple[str | int, ...]


@dataclass
class Parts:
    """What parsed of a file, each part with its index in the file, and the names the file
    gives (parsed or not: a reference to a record type that failed is no unknown name)."""

    record_types: list[tuple[int, RecordType]]
    mailboxes: list[tuple[int, LocalMailbox | ImapMailbox | GraphMailbox | EwsMailbox]]
    routes: list[tuple[int, Route]]
    graph: GraphSettings | None
    type_names: list[str | None]
    mailbox_names: list[str | None]
    route_names: list[str | None]
    all_routes: bool  # every route parsed: a check for a missing route can be trusted


def cross_check(parts: Parts) -> list[tuple[Loc, str]]:
    """The checks that parts of the file refer to each other correctly."""
    problems: list[tuple[Loc, str]] = []
    if not parts.type_names:
        problems.append((("record_types",), "declare at least one record type"))
    if not parts.mailbox_names:
        problems.append((("mailboxes",), "declare at least one mailbox"))
    _unique(problems, "record_types", parts.type_names)
    _unique(problems, "mailboxes", parts.mailbox_names)
    _unique(problems, "routes", parts.route_names)
    types = {n for n in parts.type_names if n}
    mailboxes = {n for n in parts.mailbox_names if n}
    prefixes: dict[str, str] = {}
    for i, rt in parts.record_types:
        if rt.prefix in prefixes:
            problems.append(
                (
                    ("record_types", i, "prefix"),
                    f"prefix {rt.prefix!r} is taken by record type {prefixes[rt.prefix]!r}: "
                    "each record type needs its own, so that a display id such as "
                    f"{rt.prefix}-12 says which type it is",
                )
            )
        prefixes.setdefault(rt.prefix, rt.name)
    for i, mb in parts.mailboxes:
        if mb.record_type and mb.record_type not in types:
            problems.append(
                (("mailboxes", i, "record_type"), _unknown("record type", mb.record_type, types))
            )
        if (
            parts.all_routes
            and mb.record_type is None
            and not any(
                r.mailbox in (None, mb.name) and r.to is None and r.action == "file"
                for _, r in parts.routes
            )
        ):
            problems.append((("mailboxes", i), "needs record_type, or a route without 'to' for it"))
    for i, mb in parts.mailboxes:
        tasks = mb.tasks if isinstance(mb, ImapMailbox | EwsMailbox | GraphMailbox) else None
        if tasks and tasks.record_type not in types:
            problems.append(
                (
                    ("mailboxes", i, "tasks", "record_type"),
                    _unknown("record type", tasks.record_type, types),
                )
            )
        if (
            isinstance(mb, GraphMailbox)
            and not mb.polling_only
            and parts.graph is not None
            and not parts.graph.notification_url
        ):
            problems.append(
                (
                    ("mailboxes", i),
                    "change notifications need graph.notification_url (the app's public "
                    "https URL), or set polling_only: true",
                )
            )
    by_name = {rt.name: rt for _, rt in parts.record_types}
    for i, route in parts.routes:
        if route.record_type and route.record_type not in types:
            problems.append(
                (("routes", i, "record_type"), _unknown("record type", route.record_type, types))
            )
        if route.mailbox and route.mailbox not in mailboxes:
            problems.append(
                (("routes", i, "mailbox"), _unknown("mailbox", route.mailbox, mailboxes))
            )
        record_type = by_name.get(route.record_type or "")
        if record_type is not None and record_type.fields:
            for name, value in route.fields.items():
                problem = _field_value_problem(record_type, name, value)
                if problem:
                    problems.append((("routes", i, "fields", name), problem))
    return problems


def _field_value_problem(record_type: RecordType, name: str, value: str | int) -> str | None:
    """Why a route's default `name: value` does not fit the record type's fields, if it does
    not (a record type without declared fields takes any)."""
    spec = record_type.field(name)
    if spec is None:
        declared = [f.name for f in record_type.fields]
        close = difflib.get_close_matches(name, declared, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (
            f"record type {record_type.name!r} has no field {name!r} ({hint}its fields: "
            f"{', '.join(declared)}; declare it under the record type's fields)"
        )
    text = str(value).strip()
    if spec.type == "int" and not re.fullmatch(r"[+-]?\d+", text):
        return f"{spec.name} is an int field: {value!r} is not a whole number"
    if spec.type == "date":
        try:
            date.fromisoformat(text)
        except ValueError:
            return f"{spec.name} is a date field: {value!r} is not a date as YYYY-MM-DD"
    if spec.type == "choice" and text.lower() not in {c.lower() for c in spec.choices}:
        return f"{spec.name} is a choice field: {value!r} is not one of {', '.join(spec.choices)}"
    return None


def _unique(problems: list[tuple[Loc, str]], where: str, names: list[str | None]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name is None:
            continue
        if name in seen:
            problems.append(((where, i, "name"), f"duplicate name {name!r}"))
        seen.add(name)


def _unknown(what: str, name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {name!r} ({hint}known: {', '.join(sorted(known)) or 'none'})"


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
