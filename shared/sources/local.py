"""Local mail: a folder of .eml files, a Maildir, or an mbox file.

The sample config's default mailbox, and the way to backfill exported mail. In a folder of .eml
files, a subfolder is the mail's folder (`Sent/x.eml` was read from `Sent`), so a mailbox's
`sent_folders` applies to an export that kept its folders. Source ids are
stable across runs: the file's absolute path (for a Maildir, its folder and the message's unique
name; for an mbox, the file and the message's content hash), so importing the same export twice
adds nothing, and two exports with the same file names do not hide each other. An export that was
moved is read again, and its mail is recognised by Message-ID as already filed.
"""

from __future__ import annotations

import hashlib
import mailbox as stdlib_mailbox
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..core.contracts import MailboxAction
from ..core.errors import MailfilerError
from ..store.cursors import Cursor
from .base import ActionResult, NotSupported, Sighting, SourceMessage

MAILDIR_FLAGS = {
    "S": "\\Seen",
    "R": "\\Answered",
    "F": "\\Flagged",
    "T": "\\Deleted",
    "D": "\\Draft",
}
MAX_MESSAGE_BYTES = 150 * 1024 * 1024  # Exchange Online's ceiling; larger files are refused


class LocalSourceError(OSError, MailfilerError):
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
        # A Maildir's files by unique name, listed once: a glob of the folder per message made
        # reading n messages quadratic (10,000 mails: 61 s).
        self._maildir: dict[str, Path] | None = None
        self._resolved: Path | None = None

    def _root(self) -> Path:
        """The folder's real path, resolved once (two resolves a message cost more than the
        rest of reading it)."""
        if self._resolved is None:
            self._resolved = self.path.resolve()
        return self._resolved

    def poll(self, cursor: Cursor) -> Sighting:  # noqa: ARG002
        """Everything there is, every time: no cursor, the Ingest table says what was read."""
        return Sighting(refs=self.refs(), incremental=False)

    def refs(self) -> Sequence[str]:
        root = self._root()
        if self.kind == "eml":
            return [str(root)]
        if self.kind == "eml-folder":
            return sorted(str(p.resolve()) for p in root.rglob("*.eml") if p.is_file())
        if self.kind == "maildir":
            names = []
            for sub in ("new", "cur"):
                for file in (root / sub).iterdir():
                    names.append((file.stat().st_mtime, f"{root}/{file.name.split(':', 1)[0]}"))
            return [name for _, name in sorted(names)]
        return [f"{root}#{digest}" for digest in self._mbox_messages()]

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

    def _maildir_files(self) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for sub in ("new", "cur"):  # `new` first, as the glob looked
            for file in (self.path / sub).iterdir():
                files.setdefault(file.name.split(":", 1)[0], file)
        return files

    def _maildir_file(self, unique: str) -> Path:
        file = self._maildir.get(unique) if self._maildir is not None else None
        if file is None or not file.exists():
            # Not listed yet, or renamed since (a flag change, a move from new/ to cur/).
            self._maildir = self._maildir_files()
            file = self._maildir.get(unique)
        if file is None:
            raise LocalSourceError(f"{self.path}: no Maildir message {unique}")
        return file

    def read(self, source_id: str) -> SourceMessage:
        flags: tuple[str, ...] = ()
        if self.kind == "mbox":
            raw = self._mbox_messages().get(source_id.rpartition("#")[2])
            if raw is None:
                raise LocalSourceError(f"{self.path}: no mbox message {source_id}")
            return SourceMessage(source_id=source_id, raw=raw)
        if self.kind == "maildir":
            file = self._maildir_file(source_id.rpartition("/")[2])
            info = file.name.split(":2,", 1)[1] if ":2," in file.name else ""
            flags = tuple(MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS)
        else:
            file = Path(source_id)
            if not file.resolve().is_relative_to(self._root()):
                raise LocalSourceError(f"{source_id} is not inside {self.path}")
        try:
            stat = file.stat()
            if stat.st_size > MAX_MESSAGE_BYTES:
                raise LocalSourceError(
                    f"{file}: {stat.st_size} bytes is over the {MAX_MESSAGE_BYTES} byte limit"
                )
            raw = file.read_bytes()
        except FileNotFoundError as exc:
            raise LocalSourceError(f"{file}: no such file") from exc
        received = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
        return SourceMessage(
            source_id=source_id,
            raw=raw,
            folder=self._folder_of(file),
            flags=flags,
            received_at=received,
        )

    def _folder_of(self, file: Path) -> str | None:
        """The subfolder of a folder of .eml files that holds `file` ("Sent", "Archive/2025"),
        as a mailbox export keeps its folders; None at the top, and for other kinds."""
        if self.kind != "eml-folder":
            return None
        parent = file.resolve().parent.relative_to(self._root())
        return None if parent == Path() else parent.as_posix()

    def close(self) -> None:
        """Nothing held open."""

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

    def send_mime(self, raw: bytes) -> str:  # noqa: ARG002
        raise NotSupported(f"{self.path}: a local folder does not send; give it an smtp block")

    def append(self, folder: str, raw: bytes) -> None:  # noqa: ARG002
        raise NotSupported(f"{self.path}: local files are never modified")
