"""Local mail: a folder of .eml files, a Maildir, or an mbox file.

The sample config's default mailbox, and the way to backfill exported mail. Source ids are
stable across runs (a path relative to the root, a Maildir unique name, or the content hash of an
mbox message), so importing the same export twice adds nothing.
"""

from __future__ import annotations

import hashlib
import mailbox as stdlib_mailbox
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..core.contracts import MailboxAction
from .base import ActionResult, SourceMessage

MAILDIR_FLAGS = {
    "S": "\\Seen",
    "R": "\\Answered",
    "F": "\\Flagged",
    "T": "\\Deleted",
    "D": "\\Draft",
}
MAX_MESSAGE_BYTES = 150 * 1024 * 1024  # Exchange Online's ceiling; larger files are refused


class LocalSourceError(OSError):
    pass


def detect_kind(path: Path) -> str:
    if path.is_file():
        return "eml" if path.suffix.lower() == ".eml" else "mbox"
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return "maildir"
        return "eml-folder"
    raise LocalSourceError(f"{path}: no such file or folder")


class LocalSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.kind = detect_kind(path)
        self._mbox: dict[str, bytes] | None = None

    def refs(self) -> Sequence[str]:
        if self.kind == "eml":
            return [self.path.name]
        if self.kind == "eml-folder":
            files = [p for p in self.path.rglob("*.eml") if p.is_file()]
            return sorted(p.relative_to(self.path).as_posix() for p in files)
        if self.kind == "maildir":
            names = []
            for sub in ("new", "cur"):
                names += [
                    (p.stat().st_mtime, p.name.split(":", 1)[0])
                    for p in (self.path / sub).iterdir()
                ]
            return [name for _, name in sorted(names)]
        return list(self._mbox_messages())

    def _mbox_messages(self) -> dict[str, bytes]:
        if self._mbox is None:
            box = stdlib_mailbox.mbox(self.path, create=False)
            messages: dict[str, bytes] = {}
            try:
                for key in box.iterkeys():
                    raw = box.get_bytes(key)
                    messages.setdefault("sha256:" + hashlib.sha256(raw).hexdigest(), raw)
            finally:
                box.close()
            self._mbox = messages
        return self._mbox

    def _maildir_file(self, source_id: str) -> Path:
        for sub in ("new", "cur"):
            for candidate in (self.path / sub).glob(f"{source_id}*"):
                if candidate.name.split(":", 1)[0] == source_id:
                    return candidate
        raise LocalSourceError(f"{self.path}: no Maildir message {source_id}")

    def read(self, source_id: str) -> SourceMessage:
        if self.kind == "mbox":
            raw = self._mbox_messages().get(source_id)
            if raw is None:
                raise LocalSourceError(f"{self.path}: no mbox message {source_id}")
            return SourceMessage(source_id=source_id, raw=raw)
        if self.kind == "maildir":
            file = self._maildir_file(source_id)
            info = file.name.split(":2,", 1)[1] if ":2," in file.name else ""
            flags = tuple(MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS)
        else:
            file = self.path if self.kind == "eml" else self.path / source_id
            flags = ()
        size = file.stat().st_size
        if size > MAX_MESSAGE_BYTES:
            raise LocalSourceError(
                f"{file}: {size} bytes is over the {MAX_MESSAGE_BYTES} byte limit"
            )
        raw = file.read_bytes()
        received = datetime.fromtimestamp(file.stat().st_mtime, tz=UTC)
        return SourceMessage(source_id=source_id, raw=raw, flags=flags, received_at=received)

    def apply(
        self,
        source_id: str,  # noqa: ARG002
        actions: Sequence[MailboxAction],
    ) -> list[ActionResult]:
        # A local export is the user's own copy: Mailfiler records what it would do, and leaves
        # the files untouched.
        return [
            ActionResult(action=a, done=False, detail="recorded; local files are never modified")
            for a in actions
        ]
