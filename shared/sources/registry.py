"""Which adapter serves which mailbox kind."""

from __future__ import annotations

from pathlib import Path

from ..core.config import Config
from .base import MailboxSource
from .local import LocalSource


class SourceUnavailable(RuntimeError):
    """The mailbox cannot be read now (not configured, not supported yet, unreachable)."""


def open_source(config: Config, name: str, base_dir: Path) -> MailboxSource:
    mailbox = config.mailbox(name)
    if mailbox is None:
        raise SourceUnavailable(f"mailbox {name!r} is not in the configuration")
    if mailbox.kind == "local":
        path = Path(mailbox.path)
        return LocalSource(path if path.is_absolute() else base_dir / path)
    raise SourceUnavailable(
        f"mailbox {name!r}: the {mailbox.kind} source is not implemented in this version"
    )
