"""Templates: Jinja2 with autoescaping on everything, from the package's templates/ folder."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
STATIC = HERE / "static"

_lock = threading.Lock()
_env: Any = None


def _environment() -> Any:
    """Built once, on one thread (concurrent first imports can deadlock)."""
    global _env
    with _lock:
        if _env is None:
            import jinja2

            _env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(HERE / "templates"),
                autoescape=True,  # every template is HTML; mail text is hostile
                undefined=jinja2.StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
            )
    return _env


def render(template: str, **values: Any) -> str:
    page: str = _environment().get_template(template).render(**values)
    return page
