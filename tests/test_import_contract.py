"""The import contract in pyproject.toml ([tool.importlinter]) holds, and a wrong import breaks
it: a copy of the package with one bad import, relative or absolute, at module level or inside a
function, fails `lint-imports`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = [
    sys.executable,
    "-c",
    "from importlinter.cli import lint_imports_command; lint_imports_command()",
]


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [*LINT, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    shutil.copytree(REPO / "shared", root / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_tree_keeps_the_contract() -> None:
    result = lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the core reaching up to a stage, relatively, inside a function
        (
            "core/subject.py",
            "def _x() -> None:\n    from ..stages import polls  # noqa\n",
            "Layers",
        ),
        # the store importing a mailbox adapter, absolutely
        ("store/keys.py", "import shared.sources.imap.source  # noqa\n", "Layers"),
        # the core doing I/O
        ("core/subject.py", "import azure.data.tables  # noqa\n", "The core is pure"),
        # a service reaching up to a stage (services never import stages)
        (
            "services/health.py",
            "def _x() -> None:\n    from ..stages import polls  # noqa\n",
            "Layers",
        ),
        # one stage importing another (stages share only services)
        ("stages/file.py", "from . import outbound as _outbound  # noqa\n", "Stages do not"),
        ("stages/map.py", "import shared.stages.file  # noqa\n", "Stages do not"),
        # one adapter importing another
        (
            "sources/ews/source.py",
            "from ..imap import source as _imap  # noqa\n",
            "Mailbox adapters",
        ),
    ],
)
def test_a_wrong_import_breaks_the_contract(
    copy: Path, module: str, line: str, broken: str
) -> None:
    path = copy / "shared" / module
    original = path.read_text()
    try:
        path.write_text(original + "\n" + line)
        result = lint(copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Broken contracts" in result.stdout, result.stdout[-3000:]
    named = result.stdout.split("Broken contracts", 1)[1]
    assert broken in named, result.stdout[-3000:]
