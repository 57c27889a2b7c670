"""YAML text to a `Config`, or a `ConfigError` with every problem located in the file."""

from __future__ import annotations

import re

import yaml
from pydantic import ValidationError

from .base import ConfigError
from .root import Config


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
        # libyaml's loader where built in: four times faster on a large configuration
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
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
