"""The README's command table names every command `mailfiler` has, so it cannot drift."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from shared.cli.main import build_parser

README = Path(__file__).resolve().parent.parent / "README.md"


def commands(parser: argparse.ArgumentParser, prefix: str = "mailfiler") -> Iterator[str]:
    """Each leaf command, as a person types it ("mailfiler records show")."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix
        return
    for action in subs:
        for name, sub in action.choices.items():
            yield from commands(sub, f"{prefix} {name}")


def test_the_command_table_names_every_command() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## The `mailfiler` command") :]
    table = table[: table.index("\n\n", table.index("| command |"))]
    found = list(commands(build_parser()))
    assert len(found) >= 20 and "mailfiler records show" in found
    missing = [c for c in found if f"`{c}" not in table]
    assert missing == [], f"not in the README's command table: {missing}"
