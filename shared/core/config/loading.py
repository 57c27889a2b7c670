"""YAML text to a `Config`, or a `ConfigError` with every problem located in the file.

One pass finds everything: the whole file is validated once (pydantic reports every field of
every part), then the checks between parts run over each part that parsed on its own, so a
broken mailbox does not hide an unknown record type in a route. Every problem is said in our
words (what the key takes, with an example), named by its place in the file (mailboxes by
name, lists by index) and its line.
"""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from .base import NAME, SETTING, ConfigError
from .mailboxes import (
    AUTHSERV_ID,
    EwsMailbox,
    GraphMailbox,
    GraphSettings,
    ImapMailbox,
    LocalMailbox,
    Mailbox,
)
from .records import RecordType
from .root import Config, Loc, Parts, _unknown, cross_check
from .routes import Route

_MAILBOX: TypeAdapter[LocalMailbox | ImapMailbox | GraphMailbox | EwsMailbox] = TypeAdapter(Mailbox)

# What a pattern-checked value may contain, by the pattern pydantic reports.
_PATTERNS = {
    NAME: "a name is lower-case letters a-z, digits, '-' and '_' (at most 63), starting with a "
    "letter or digit, e.g. support",
    SETTING: "an app setting's name is letters, digits and '_', not starting with a digit, "
    "e.g. IMAP_SUPPORT_PASSWORD",
    AUTHSERV_ID: "a host name as the server writes it in Authentication-Results, "
    "e.g. mx.example.com",
    r"^[A-Z][A-Z0-9]{0,9}$": "a prefix is 1 to 10 capital letters A-Z and digits, starting "
    "with a letter, e.g. CASE",
    r"^[A-Za-z][A-Za-z0-9_]{0,60}$": "a field name is letters, digits and '_' (at most 61), "
    "starting with a letter, e.g. Priority",
    r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$": "a queue name is 3 to 63 lower-case letters, digits "
    "and '-', not starting or ending with '-'",
    r"^\d+\.\d+$": "a version such as 15.1",
}

# What the items of a list are, by its key, for "a list of ..., e.g. [...]".
_LISTS = {
    "folders": ("folder names", "INBOX"),
    "sent_folders": ("folder names", "Sent"),
    "addresses": ("addresses", "support@example.com"),
    "statuses": ("statuses", "new, open, closed"),
    "closed_statuses": ("statuses", "closed"),
    "choices": ("choices", "Billing, Technical"),
    "tags": ("tags", "sales"),
    "allowed_domains": ("domains", "example.com"),
    "allow": ("addresses or @domains", "@example.com"),
    "authserv_id": ("host names", "mx.example.com"),
    "key_settings": ("app setting names", "SIGNING_KEY"),
    "events": ("event types", "record.created"),
    "record_types": ("record types", "{name: case, prefix: CASE}"),
    "mailboxes": ("mailboxes", "{name: support, kind: local, path: mail}"),
    "routes": ("routes", "{name: billing, to: billing@example.com, record_type: case}"),
    "fields": ("fields", "{name: Priority, type: int}"),
    "webhooks": ("webhooks", "{name: crm, url: 'https://...', secret_setting: CRM_SECRET}"),
}

# Lists whose items have unique names: named by them (mailboxes.support), not by index.
_NAMED = ("mailboxes", "record_types")


@dataclass
class Problem:
    loc: Loc  # where in the data (indices and keys as in the file)
    path: str  # the same, as a person reads it: mailboxes.support.folders
    line: int | None
    message: str


@dataclass
class ConfigReport:
    """Everything `config check` learns from a file in one pass."""

    source: str
    data: Any = None
    config: Config | None = None  # only when there is no problem
    problems: list[Problem] = field(default_factory=list)
    # What parsed, part by part: for checks outside the pure core (files, settings).
    mailboxes: list[tuple[int, LocalMailbox | ImapMailbox | GraphMailbox | EwsMailbox]] = field(
        default_factory=list
    )
    _node: yaml.Node | None = None
    _text: str = ""

    def add(self, loc: Loc, message: str, at: Loc | None = None) -> None:
        """A problem at `loc`, on the line of `at` (default: `loc`)."""
        line = self._line(loc if at is None else at)
        self.problems.append(Problem(loc, _place(loc, self.data), line, message))

    def place(self, loc: Loc) -> str:
        return _place(loc, self.data)

    def error(self) -> ConfigError:
        return ConfigError(
            self.source,
            [(p.path, p.message) for p in self.problems],
            [p.line for p in self.problems],
        )

    def _line(self, loc: Loc) -> int | None:
        if self._node is None and self._text:
            try:  # only when there is something to place: composing costs a second parse
                self._node = yaml.compose(self._text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                return None
        return _line_of(self._node, loc) if self._node is not None else None


def check_config(text: str, source: str = "<config>") -> ConfigReport:
    """Every problem of a configuration file at once; `config` is set only if it has none."""
    report = ConfigReport(source, _text=text)
    try:
        # libyaml's loader where built in: four times faster on a large configuration
        report.data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        report.problems.append(_yaml_problem(exc, text))
        return report
    except ValueError as exc:  # a plain value YAML reads as a date that does not exist
        report.problems.append(
            Problem((), "", None, f"a date that does not exist ({exc}); quote it if it is text")
        )
        return report
    data = report.data
    if not isinstance(data, dict):
        report.problems.append(
            Problem((), "", None, "the file must be a mapping with record_types and mailboxes")
        )
        return report
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={"cross_checks": False})
    except ValidationError as exc:
        seen: set[tuple[Loc, str]] = set()
        for err in exc.errors():
            loc, message = _words(err)
            if loc and loc[-1] in ("str", "int") and len(loc) > 2 and loc[-3] == "fields":
                # A route field's value: one message, not one per type it may have.
                loc, message = loc[:-1], f"text or a whole number, not {err.get('input')!r}"
            if (loc, message) in seen:
                continue
            seen.add((loc, message))
            report.add(loc, message, at=tuple(err["loc"]))
    parts = _parts(data, config)
    report.mailboxes = parts.mailboxes
    for loc, message in [*cross_check(parts), *_references_of_failed(data, parts)]:
        report.add(loc, message)
    report.problems.sort(key=lambda p: p.line or 0)
    if not report.problems:
        report.config = config
    return report


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a `Config`; every problem is reported with its path in the file."""
    report = check_config(text, source)
    if report.config is None:
        raise report.error()
    return report.config


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return Problem((), "", None, f"YAML syntax error: {problem}")
    line = mark.line + 1
    lines = text.splitlines()
    row = lines[mark.line] if mark.line < len(lines) else ""
    if "\t" in row[: mark.column + 1] or "'\\t'" in problem:
        column = row.index("\t") + 1 if "\t" in row else mark.column + 1
        return Problem(
            (),
            "",
            line,
            f"a tab at column {column}: YAML indents with spaces only; replace the tab with spaces",
        )
    return Problem((), "", line, f"YAML syntax error at column {mark.column + 1}: {problem}")


def _parts(data: dict[str, Any], config: Config | None) -> Parts:
    def items(key: str) -> list[Any]:
        value = data.get(key)
        return list(value) if isinstance(value, list | tuple) else []

    def names(key: str) -> list[str | None]:
        return [i.get("name") if isinstance(i, dict) else None for i in items(key)]

    def each(key: str, parse: Any) -> list[tuple[int, Any]]:
        out = []
        for i, item in enumerate(items(key)):
            try:
                out.append((i, parse(item)))
            except (ValidationError, ValueError, TypeError):
                continue  # reported by the whole file's validation
        return out

    route_names = names("routes")
    if config is not None:
        return Parts(
            list(enumerate(config.record_types)),
            list(enumerate(config.mailboxes)),
            list(enumerate(config.routes)),
            config.graph,
            names("record_types"),
            names("mailboxes"),
            route_names,
            all_routes=True,
        )
    routes = each("routes", Route.model_validate)
    try:
        graph: GraphSettings | None = GraphSettings.model_validate(data.get("graph") or {})
    except ValidationError:
        graph = None
    return Parts(
        each("record_types", RecordType.model_validate),
        each("mailboxes", _MAILBOX.validate_python),
        routes,
        graph,
        _strings(names("record_types")),
        _strings(names("mailboxes")),
        _strings(route_names),
        all_routes=len(routes) == len(items("routes")),
    )


def _references_of_failed(data: dict[str, Any], parts: Parts) -> list[tuple[Loc, str]]:
    """The record types and mailboxes that parts which did not parse name (parsed parts are
    checked by `cross_check`): an unknown name there is one more thing to fix now."""
    types = {n for n in parts.type_names if n}
    mailboxes = {n for n in parts.mailbox_names if n}
    parsed = {"mailboxes": {i for i, _ in parts.mailboxes}, "routes": {i for i, _ in parts.routes}}
    out: list[tuple[Loc, str]] = []
    for key, refs in (("mailboxes", ("record_type",)), ("routes", ("record_type", "mailbox"))):
        items = data.get(key)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if i in parsed[key] or not isinstance(item, dict):
                continue
            for ref in refs:
                name, known = item.get(ref), types if ref == "record_type" else mailboxes
                if isinstance(name, str) and name not in known:
                    what = "record type" if ref == "record_type" else "mailbox"
                    out.append(((key, i, ref), _unknown(what, name, known)))
    return out


def _strings(names: list[Any]) -> list[str | None]:
    return [n if isinstance(n, str) else None for n in names]


def _words(err: ErrorDetails) -> tuple[Loc, str]:
    """A validator's error in our words, at its place in the file's data."""
    loc: Loc = tuple(err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    key = next((p for p in reversed(loc) if isinstance(p, str) and p in _known_keys()), "")
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _keys_at(loc[:-1])
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return loc[:-1], f"unknown key {name!r}{hint}"
    if kind == "missing":
        return loc[:-1], f"{loc[-1]!r} is required here"
    if kind in ("tuple_type", "list_type"):
        what, example = _LISTS.get(key, ("items", ""))
        if isinstance(value, str | int) and len(str(value)) <= 40 and key not in _NAMED:
            example = str(value)
        return loc, f"a list of {what}, e.g. [{example}]" if example else f"a list of {what}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        rule = _PATTERNS.get(pattern, f"it must match {pattern}")
        return loc, f"{value!r} is not allowed: {rule}"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), expected, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return loc, f"{value!r} is not one of: {', '.join(expected)}{hint}"
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        what = str(ctx.get("discriminator", "kind")).strip("'")
        close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return loc, f"{what} {ctx.get('tag')!r} is not one of: {', '.join(tags)}{hint}"
    if kind == "union_tag_not_found":
        what = str(ctx.get("discriminator", "kind")).strip("'")
        return loc, f"say which {what} it is: {what}: local, imap, graph or ews"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return loc, f"a whole number, not {value!r}"
    if kind in ("bool_parsing", "bool_type"):
        return loc, f"true or false, not {value!r}"
    if kind in (
        "date_parsing",
        "date_from_datetime_parsing",
        "date_type",
        "date_from_datetime_inexact",
    ):
        return loc, f"a date as YYYY-MM-DD, not {value!r}"
    if kind == "string_type":
        return loc, f"text, not {value!r} (put it in quotes: '{value}')"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"a mapping of 'key: value' lines, not {_short(value)!r}"
    if kind == "greater_than_equal":
        return loc, f"at least {ctx.get('ge')}, not {value!r}"
    if kind == "less_than_equal":
        return loc, f"at most {ctx.get('le')}, not {value!r}"
    message = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
    return loc, message


def _short(value: Any) -> Any:
    return value if not isinstance(value, str) or len(value) <= 40 else value[:37] + "..."


def _place(loc: Loc, data: Any) -> str:
    """`('mailboxes', 0, 'local', 'folders')` as a person reads it: `mailboxes.support.folders`
    (the name when the list's items have unique names), `routes[2].fields.Priority`."""
    out = ""
    node = data
    for n, part in enumerate(loc):
        last = n == len(loc) - 1
        if isinstance(part, int):
            named = _unique_name(node, part) if out in _NAMED else None
            out += f".{named}" if named else f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        tag = part in (
            node.get("kind") if isinstance(node, dict) else None,
            "microsoft",
            "google",
        ) or part.startswith("function-")
        if isinstance(node, dict) and part not in node and (tag or not last):
            continue  # pydantic's tag of a kind (local, imap...) or its validator: not in the file
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, dict) else None
    return out


def _unique_name(items: Any, index: int) -> str | None:
    if not isinstance(items, list) or index >= len(items) or not isinstance(items[index], dict):
        return None
    name = items[index].get("name")
    if not isinstance(name, str) or not re.fullmatch(NAME, name):
        return None
    same = [i for i in items if isinstance(i, dict) and i.get("name") == name]
    return name if len(same) == 1 else None


def _line_of(node: yaml.Node, loc: Loc) -> int:
    """The line of the deepest part of `loc` the file has (a missing key: its parent's)."""
    line = node.start_mark.line + 1
    for n, part in enumerate(loc):
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
        elif isinstance(node, yaml.MappingNode) and isinstance(part, str):
            pair = next((kv for kv in node.value if kv[0].value == part), None)
            if pair is None:
                continue  # a tag pydantic adds, or a key that is missing
            if n == len(loc) - 1:
                return int(pair[0].start_mark.line) + 1
            node = pair[1]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _members(tp: Any) -> list[Any]:
    """A type annotation's alternatives, without Annotated, Optional and unions."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, BaseModel)


def _step(tp: Any, part: str | int) -> Any:
    members = _members(tp)
    for member in members:
        origin = typing.get_origin(member)
        if isinstance(part, int) and origin is tuple:
            return typing.get_args(member)[0]
        if isinstance(part, str) and origin is dict:
            return typing.get_args(member)[1]
        if isinstance(part, str) and _is_model(member) and part in member.model_fields:
            return member.model_fields[part].annotation
    for member in members:  # a kind's tag: the model whose kind (or provider) it names
        if _is_model(member):
            for name in ("kind", "provider"):
                info = member.model_fields.get(name)
                if info is not None and part in typing.get_args(info.annotation):
                    return member
    if isinstance(part, str) and part.startswith("function-"):
        return tp  # pydantic's validator step
    return None


def _keys_at(loc: Loc) -> list[str]:
    """The keys the file may write at `loc`, for "did you mean"."""
    tp: Any = Config
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    return sorted({k for m in _members(tp) if _is_model(m) for k in m.model_fields})


def _known_keys() -> frozenset[str]:
    return frozenset(_LISTS)
