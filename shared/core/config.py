"""The declarative configuration: mailboxes, record types and routes, validated by pydantic.

Pure: text in, a `Config` or a `ConfigError` out. Reading the file and resolving the app settings
that hold secrets happen outside `shared/core`. Secrets are never written here: a mailbox names
the app setting that holds each one (`password_setting: IMAP_SUPPORT_PASSWORD`), which in Azure
is a Key Vault reference.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SETTING = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Keys that would put a secret in the file; each has a `<key>_setting` twin naming an app setting.
SECRET_KEYS = ("password", "client_secret", "secret", "token", "refresh_token", "api_key", "key")


class ConfigError(ValueError):
    """A configuration that cannot be used, with every problem located in the file."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"{source}: {path}: {problem}" if path else f"{source}: {problem}"
            for path, problem in problems
        ]
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key).lower() in SECRET_KEYS:
                    raise ValueError(
                        f"'{key}' would put a secret in the file; write '{key}_setting: NAME' "
                        "and keep the value in that app setting (a Key Vault reference in Azure)"
                    )
        return data


class AfterFiling(_Strict):
    """What to do to the mail in its mailbox once it is safely filed."""

    mark_read: bool = False
    move_to: str | None = None
    category: str | None = None


class _MailboxBase(_Strict):
    name: Annotated[str, Field(pattern=NAME)]
    record_type: str | None = Field(
        default=None, description="record type for new conversations when no route matches"
    )
    enabled: bool = True
    after_filing: AfterFiling = AfterFiling()


class LocalMailbox(_MailboxBase):
    """A folder of .eml files, a Maildir, or an mbox file (relative to the config file)."""

    kind: Literal["local"]
    path: str


class ImapMailbox(_MailboxBase):
    kind: Literal["imap"]
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    username: str
    auth: Literal["password", "xoauth2"] = "password"
    password_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    folders: tuple[str, ...] = ("INBOX",)

    @model_validator(mode="after")
    def _credential_named(self) -> ImapMailbox:
        if self.auth == "password" and not self.password_setting:
            raise ValueError("auth 'password' needs password_setting (the app setting's name)")
        return self


class GraphMailbox(_MailboxBase):
    kind: Literal["graph"]
    user: str = Field(description="the mailbox's UPN or object id")
    tenant_id: str
    client_id: str
    client_secret_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    polling_only: bool = False


class EwsMailbox(_MailboxBase):
    kind: Literal["ews"]
    endpoint: str
    username: str
    password_setting: Annotated[str, Field(pattern=SETTING)]
    access_type: Literal["delegate", "impersonation"] = "delegate"


Mailbox = Annotated[
    LocalMailbox | ImapMailbox | GraphMailbox | EwsMailbox, Field(discriminator="kind")
]


class RecordType(_Strict):
    name: Annotated[str, Field(pattern=NAME)]
    prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,9}$")]
    title: str | None = None


class Route(_Strict):
    """Mail to `to` (an address or alias; plus-addressing matches) in `mailbox` goes to a type."""

    name: Annotated[str, Field(pattern=NAME)]
    mailbox: str | None = None
    to: str | None = None
    record_type: str
    fields: dict[str, str | int] = {}

    @field_validator("to")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class Config(_Strict):
    version: Literal[1] = 1
    record_types: tuple[RecordType, ...]
    mailboxes: tuple[Mailbox, ...]
    routes: tuple[Route, ...] = ()

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
                r.mailbox in (None, mb.name) and r.to is None for r in self.routes
            ):
                problems.append(
                    (f"mailboxes[{i}]", "needs record_type, or a route without 'to' for it")
                )
        for i, route in enumerate(self.routes):
            if route.record_type not in types:
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
        return out


def _unique(problems: list[tuple[str, str]], where: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append((f"{where}[{i}].name", f"duplicate name {name!r}"))
        seen.add(name)


def _unknown(what: str, name: str, known: set[str]) -> str:
    return f"unknown {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("local", "imap", "graph", "ews", "function-after[_credential_named()]"):
            continue  # pydantic's discriminator tag, not a path in the file
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a `Config`; every problem is reported with its path in the file."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(where, f"YAML syntax error: {problem}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            source, [("", "the file must be a mapping with record_types and mailboxes")]
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            msg = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
            if not err["loc"] and "; " in msg and ": " in msg:
                # Cross-reference problems come back as one message: split them to their paths.
                for part in msg.split("; "):
                    path, _, problem = part.partition(": ")
                    problems.append((path, problem))
                continue
            problems.append((_loc(err["loc"]), msg))
        raise ConfigError(source, problems) from exc
