"""`shared/core` is the pure domain: no I/O, network, Azure or clock, checked on its source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "shared" / "core"
FORBIDDEN_MODULES = {
    "azure",
    "httpx",
    "requests",
    "urllib",
    "urllib3",
    "socket",
    "ssl",
    "http",
    "imaplib",
    "smtplib",
    "exchangelib",
    "imapclient",
    "msal",
    "subprocess",
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "io",
    "asyncio",
    "threading",
    "time",
    "logging",
    "sqlite3",
    "mailbox",
}
FORBIDDEN_CALLS = {
    "open",
    "now",
    "utcnow",
    "today",
    "time",
    "monotonic",
    "perf_counter",
    "getenv",
    "read_text",
    "read_bytes",
    "write_text",
    "write_bytes",
}


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.relative_to(CORE).as_posix())
def test_core_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(node.module)
        elif isinstance(node, ast.Call):
            name = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            if name in FORBIDDEN_CALLS:
                found.append(f"{name}() at line {node.lineno}")
    assert found == [], f"{path.name} is not pure: {found}"


def test_the_check_sees_every_core_module() -> None:
    names = {p.relative_to(CORE).as_posix() for p in core_modules()}
    assert {"message.py", "mime.py", "config/__init__.py", "decide.py", "contracts.py"} <= names
