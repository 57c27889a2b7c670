"""An IMAP mailbox as a `MailboxSource`.

The cursor is per folder: UIDVALIDITY and the highest UID queued (kept by the poll stage in
table `ImapState`, store/cursors.py; this source only reads the server). A poll asks each
folder's STATUS first, so a mailbox with nothing new costs LOGIN, one STATUS per folder and
LOGOUT, whatever its size. New mail is listed by `UID SEARCH UID n:*` (filtered here: servers
answer the highest UID even when it is below n) and fetched in chunks with `BODY.PEEK[]`,
which never sets \\Seen. The cursor moves only once everything listed is queued (the poll
stage saves the Sighting's cursor); a poll that dies halfway lists the rest again next time,
and what was queued is skipped by the Ingest table. A changed UIDVALIDITY starts the folder
again: the mail is listed anew under new source ids, and the map stage recognises it by
Message-ID (a sighting, never a second filing).

Source ids are `<uidvalidity>:<uid>:<folder>`.

Failures: a server that asks for quiet (RFC 5530 `[UNAVAILABLE]`, `[LIMIT]`, Microsoft 365's
"Request is throttled. Suggested Backoff Time: N milliseconds") raises `SourceBusy`; a dropped
connection (BYE, EOF, reset, timeout) raises `ImapUnavailable`, a `SourceUnavailable`: the work
is retried as it is. Anything else is `ImapError`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from ...core.config import ImapMailbox
from ...core.contracts import FlagChange, MailboxAction
from ...core.errors import MailfilerError
from ...store.cursors import Cursor, CursorValue, FolderCursor
from ..base import (
    ActionResult,
    NotSupported,
    Sighting,
    SourceBusy,
    SourceMessage,
    SourceUnavailable,
)

log = logging.getLogger(__name__)
FETCH_CHUNK = 100  # messages per FETCH
SEEN, DELETED, FLAGGED = b"\\Seen", b"\\Deleted", b"\\Flagged"


MAX_TRACKED = 2000  # flagged UIDs remembered per folder (the newest); fits a table property
GONE_DETAIL = "the message is gone from the folder (moved or deleted): left where it is"


@dataclass
class _Cursor:
    """A folder's cursor as this poll leaves it (the Sighting's, saved by the poll stage)."""

    validity: int
    last: int
    modseq: int | None = None
    flagged: set[int] = field(default_factory=set)
    changes: list[tuple[str, str]] = field(default_factory=list)  # (Message-ID, flag)


class ImapError(OSError, MailfilerError):
    """The server refused, went away or answered nonsense: the poll fails, nothing is lost."""


class ImapUnavailable(ImapError, SourceUnavailable):
    """The connection dropped (BYE, EOF, reset, timeout) or the server failed for a moment
    ([INUSE]): the work is retried as it is."""


# RFC 5530 response codes asking for quiet, with the pause we take when no number is given.
BUSY_CODES = {"UNAVAILABLE": 60.0, "LIMIT": 120.0}
MAX_BACK_OFF = 3600.0  # a server's number is trusted up to this
_CODE = re.compile(r"\[([A-Z-]+)[\] ]")
_SUGGESTED = re.compile(r"Suggested Backoff Time:\s*(\d{1,9})\s*milliseconds", re.IGNORECASE)
# Hierarchy delimiters per server account, asked once per process (LIST "" "").
_DELIMITERS: dict[tuple[str, int, str, str], str] = {}
_DELIMITERS_LOCK = threading.Lock()


def source_id(uidvalidity: int, uid: int, folder: str) -> str:
    return f"{uidvalidity}:{uid}:{folder}"


def parse_source_id(value: str) -> tuple[int, int, str]:
    validity, uid, folder = value.split(":", 2)
    return int(validity), int(uid), folder


class ImapSource:
    def __init__(self, mailbox: ImapMailbox, secret: str) -> None:
        self.mailbox = mailbox
        self.secret = secret  # the password, or an OAuth2 access token for XOAUTH2
        self.commands = 0  # IMAP commands this source sent (the idle-poll figure)
        self._client: IMAPClient | None = None
        self._selected: tuple[str, bool] | None = None
        self._pending: dict[str, _Cursor] = {}  # folder -> where the next poll starts
        self._order: list[str] = []
        self._cache: dict[str, SourceMessage] = {}
        self._delimiter: str | None = None
        self._gmail_ids: set[int] = set()  # X-GM-MSGIDs listed in this poll
        self._message_id: str | None = None  # of the message `apply` works on (COPY servers)

    # -- connection --------------------------------------------------------------------------

    def _connect(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        mb = self.mailbox
        context = self._tls_context()
        client: IMAPClient | None = None
        try:
            client = IMAPClient(
                mb.host,
                port=mb.server_port,
                ssl=mb.tls == "implicit",
                ssl_context=context,
                timeout=30,
            )
            if mb.tls == "starttls":
                self._count(1)
                client.starttls(context)
            self._count(1)
            if mb.auth == "xoauth2":
                try:
                    # Microsoft 365: the shared mailbox's address, the delegate's token.
                    client.oauth2_login(mb.shared_mailbox or mb.username, self.secret)
                except IMAPClientError:
                    from .oauth import forget_token

                    forget_token(mb)  # refused: the next poll asks for a new token
                    raise
            elif mb.shared_mailbox:
                # RFC 4616: authenticate as the delegate, act as the shared mailbox.
                client.plain_login(mb.username, self.secret, mb.shared_mailbox)
            else:
                client.login(mb.username, self.secret)
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            if client is not None:  # half open (TLS or login refused): let go of the socket
                with contextlib.suppress(Exception):
                    client.shutdown()
            hint = ""
            if isinstance(exc, ssl.SSLCertVerificationError) and not mb.ca_bundle:
                hint = " (an internal CA? set ca_bundle to its PEM file)"
            raise failure(exc, f"imap {mb.host}:{mb.server_port} ({mb.tls})", hint) from exc
        self._client = client
        return client

    def _tls_context(self) -> ssl.SSLContext | None:
        mb = self.mailbox
        if mb.tls == "none":
            return None
        if mb.ca_bundle and not Path(mb.ca_bundle).is_file():
            raise ImapError(f"imap {mb.host}: ca_bundle {mb.ca_bundle} is not a file")
        try:
            return ssl.create_default_context(cafile=mb.ca_bundle)
        except ssl.SSLError as exc:
            raise ImapError(f"imap {mb.host}: ca_bundle {mb.ca_bundle}: {_plain(exc)}") from exc

    def _count(self, n: int) -> None:
        self.commands += n

    def close(self) -> None:
        client, self._client, self._selected = self._client, None, None
        if client is not None:
            try:
                self._count(1)
                client.logout()
            except (IMAPClientError, OSError):
                pass

    def _server_name(self, folder: str) -> str:
        """A folder path as configured ("Cases/Done") in the server's hierarchy delimiter."""
        if "/" not in folder:
            return folder
        if self._delimiter is None:
            mb = self.mailbox
            key = (mb.host, mb.server_port, mb.username, mb.shared_mailbox or "")
            with _DELIMITERS_LOCK:
                self._delimiter = _DELIMITERS.get(key)
            if self._delimiter is None:
                client = self._connect()
                self._count(1)
                found = client.list_folders("", "")  # LIST "" "": the delimiter alone
                self._delimiter = _text(found[0][1]) if found and found[0][1] else "/"
                with _DELIMITERS_LOCK:
                    _DELIMITERS[key] = self._delimiter
        return folder.replace("/", self._delimiter)

    def _select(self, folder: str, *, readonly: bool) -> dict[bytes, Any]:
        client = self._connect()
        self._count(1)
        info: dict[bytes, Any] = client.select_folder(self._server_name(folder), readonly=readonly)
        self._selected = (folder, readonly)
        return info

    @contextlib.contextmanager
    def _failures(self, doing: str = "", *, then_close: bool = False) -> Iterator[None]:
        """A failure closes the connection (it may be left mid-command); a network or protocol
        error becomes the source's own (`failure`, `doing` saying what failed), ours pass as
        they are. `then_close`: close it in any case."""
        try:
            yield
        except (ImapError, SourceBusy):
            self.close()
            raise
        except (IMAPClientError, OSError) as exc:
            self.close()
            raise failure(exc, f"imap {self.mailbox.host}{doing}") from exc
        finally:
            if then_close:
                self.close()

    # -- MailboxSource -----------------------------------------------------------------------

    def poll(self, cursor: Cursor) -> Sighting:
        """New mail of every watched folder since `cursor`, the \\Flagged changes (with
        `tasks`), and where the next poll starts."""
        ids: list[str] = []
        self._pending = {}
        with self._failures():
            client = self._connect()
            for folder in self.mailbox.folders:
                ids.extend(self._list_folder(client, folder, cursor.get(folder) or {}))
        self._order = ids
        return Sighting(
            refs=ids,
            incremental=True,
            changes=[
                FlagChange(mailbox=self.mailbox.name, message_id=message_id, status=flag)
                for pending in self._pending.values()
                for message_id, flag in pending.changes
            ],
            cursor={folder: self._saved(pending) for folder, pending in self._pending.items()},
        )

    def _saved(self, cursor: _Cursor) -> dict[str, CursorValue]:
        """A folder's cursor as table properties (the names the rows have always had)."""
        row: dict[str, CursorValue] = {"UidValidity": cursor.validity, "LastUid": cursor.last}
        if self.mailbox.tasks is not None:
            newest = sorted(cursor.flagged)[-MAX_TRACKED:]
            row.update(
                FlagsTracked=True,
                Flagged=" ".join(map(str, newest)),
                HighestModSeq=cursor.modseq,
            )
        return row

    def _list_folder(self, client: IMAPClient, folder: str, state: FolderCursor) -> list[str]:
        """New mail of one folder, and (with `tasks`) the \\Flagged changes since last time."""
        tracking = self.mailbox.tasks is not None
        condstore = tracking and client.has_capability("CONDSTORE")
        items = [b"UIDVALIDITY", b"UIDNEXT"] + ([b"HIGHESTMODSEQ"] if condstore else [])
        self._count(1)
        status = client.folder_status(self._server_name(folder), items)
        validity = int(status[b"UIDVALIDITY"])
        same = state.get("UidValidity") == validity
        if state.get("UidValidity") not in (None, validity):
            log.warning(
                "imap: mailbox=%s folder=%s UIDVALIDITY changed: resync", self.mailbox.name, folder
            )
        last = int(state.get("LastUid") or 0) if same else 0
        cursor = _Cursor(validity, last)
        if condstore:
            cursor.modseq = int(status.get(b"HIGHESTMODSEQ") or 0) or None
        known = same and bool(state.get("FlagsTracked"))  # else: a baseline, no transitions
        if known:
            cursor.flagged = {int(u) for u in str(state.get("Flagged") or "").split()}
        new_mail = int(status[b"UIDNEXT"]) - 1 > last
        if condstore:
            flags_due = last > 0 and (not known or cursor.modseq != state.get("HighestModSeq"))
        else:
            flags_due = tracking and last > 0 and (not known or self.mailbox.flag_rescan > 0)
        if not new_mail and not flags_due:
            if tracking and not known:
                self._pending[folder] = cursor  # start tracking from here
            return []  # nothing new: STATUS was enough
        self._select(folder, readonly=True)
        uids: list[int] = []
        flagged_new: list[int] = []
        if new_mail:
            criteria: list[Any] = ["UID", f"{last + 1}:*"]
            if last == 0 and self.mailbox.since:
                criteria = ["SINCE", self.mailbox.since]
            self._count(1)
            uids = sorted(u for u in client.search(criteria) if u > last)
            if uids and tracking:
                self._count(1)
                flagged_new = [u for u in client.search([*criteria, "FLAGGED"]) if u > last]
        if uids:
            cursor.last = uids[-1]
        changes: dict[int, str] = {u: "flagged" for u in flagged_new}
        if flags_due:
            changes.update(self._flag_changes(client, cursor, last, known, condstore))
        cursor.flagged.update(flagged_new)
        if changes:
            cursor.changes = self._message_ids(client, changes)
        if tracking or uids:
            self._pending[folder] = cursor
        if uids and len(self.mailbox.folders) > 1 and client.has_capability("X-GM-EXT-1"):
            uids = self._first_label_only(client, uids)
        return [source_id(validity, uid, folder) for uid in uids]

    def _first_label_only(self, client: IMAPClient, uids: list[int]) -> list[int]:
        """Gmail shows one message in the folder of each of its labels: a message already
        listed from an earlier watched folder in this poll (same X-GM-MSGID) is not fetched
        and queued again."""
        self._count(1)
        found = client.fetch(uids, [b"X-GM-MSGID"])
        keep = []
        for uid in uids:
            gm = found.get(uid, {}).get(b"X-GM-MSGID")
            if gm is not None and int(gm) in self._gmail_ids:
                continue
            if gm is not None:
                self._gmail_ids.add(int(gm))
            keep.append(uid)
        return keep

    def _flag_changes(
        self, client: IMAPClient, cursor: _Cursor, last: int, known: bool, condstore: bool
    ) -> dict[int, str]:
        """Messages up to `last` whose \\Flagged changed, by one `UID SEARCH ... FLAGGED`
        compared with the flagged UIDs stored: all of them with CONDSTORE (asked only when
        HIGHESTMODSEQ moved), else the newest `flag_rescan` (a bounded window). The first
        look only notes what is flagged now (a baseline: old flags make no tasks)."""
        low = 1 if condstore or not known else max(1, last - self.mailbox.flag_rescan + 1)
        self._count(1)
        now = set(client.search(["UID", f"{low}:{last}", "FLAGGED"]))
        before = {u for u in cursor.flagged if low <= u <= last}
        cursor.flagged = (cursor.flagged - before) | now
        if not known:
            return {}
        changes = {u: "flagged" for u in now - before}
        # Unflagged, or gone (expunged, moved away): `_message_ids` tells them apart.
        changes.update({u: "notFlagged" for u in before - now})
        return changes

    def _message_ids(self, client: IMAPClient, changes: dict[int, str]) -> list[tuple[str, str]]:
        """The Message-IDs of the changed messages, with their flag as the server has it now;
        a message no longer in the folder is left out (moving mail away is no unflagging)."""
        self._count(1)
        found = client.fetch(sorted(changes), [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        out: list[tuple[str, str]] = []
        for uid, data in found.items():
            if uid not in changes:
                continue
            header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"")
            message_id = BytesHeaderParser().parsebytes(bytes(header or b"")).get("Message-ID")
            flagged = FLAGGED in data.get(b"FLAGS", ())
            if message_id:
                out.append((str(message_id).strip(), "flagged" if flagged else "notFlagged"))
        return out

    def read(self, item: str) -> SourceMessage:
        found = self._cache.pop(item, None)
        if found is not None:
            return found
        validity, uid, folder = parse_source_id(item)
        # Read ahead: this id and the next ones of the same folder, in one FETCH.
        start = self._order.index(item) if item in self._order else 0
        batch = [
            i for i in self._order[start : start + FETCH_CHUNK] if parse_source_id(i)[2] == folder
        ] or [item]
        uids = {parse_source_id(i)[1]: i for i in batch}
        with self._failures():
            if self._selected is None or self._selected[0] != folder:
                info = self._select(folder, readonly=True)
                if int(info[b"UIDVALIDITY"]) != validity:
                    raise ImapError(f"imap: {folder} changed UIDVALIDITY; the poll starts again")
            client = self._connect()
            items = [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"]
            gmail = client.has_capability("X-GM-EXT-1")
            if gmail:  # Gmail's conversation (thread) id
                items.append(b"X-GM-THRID")
            self._count(1)
            answers = client.fetch(sorted(uids), items)
        for got_uid, data in answers.items():
            ident = uids.get(got_uid)
            raw = data.get(b"BODY[]")
            if ident is None or raw is None:
                continue
            received = data.get(b"INTERNALDATE")
            if isinstance(received, datetime) and received.tzinfo is None:
                received = received.replace(tzinfo=UTC)
            self._cache[ident] = SourceMessage(
                source_id=ident,
                raw=bytes(raw),
                folder=folder,
                flags=tuple(_text(f) for f in data.get(b"FLAGS", ())),
                received_at=received if isinstance(received, datetime) else None,
                conversation_id=_gmail_thread(data) if gmail else None,
            )
        found = self._cache.pop(item, None)
        if found is None:
            # Expunged between SEARCH and FETCH: nothing to file, and nothing lost.
            raise ImapError(f"imap: {folder} UID {uid} is gone")
        return found

    def apply(self, item: str, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        """\\Seen and a keyword in one STORE, then MOVE (or COPY + \\Deleted + UID EXPUNGE) or
        delete. The target folder is created only when the server says it is missing
        ([TRYCREATE]); a CREATE another worker won ([ALREADYEXISTS]) is success.

        Safe to retry: a busy server raises `SourceBusy`, a dropped connection
        `ImapUnavailable`, and a retry does only what is left. The message is found by its UID
        alone: once moved (by us or by the user) it is gone from the folder and nothing is done
        again; it is never searched for elsewhere and moved back. A folder that changed
        UIDVALIDITY is reported as gone too."""
        validity, uid, folder = parse_source_id(item)
        with self._failures(then_close=True):
            info = self._select(folder, readonly=False)
            if int(info[b"UIDVALIDITY"]) != validity:
                return [
                    ActionResult(a, False, "the folder was rebuilt; message not found")
                    for a in actions
                ]
            client = self._connect()
            items = [b"FLAGS"]
            copying = any(a.action == "move" for a in actions) and not client.has_capability("MOVE")
            if copying:  # COPY is not atomic: a retry looks for an earlier copy by Message-ID
                items.append(b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
            self._count(1)
            found = client.fetch([uid], items).get(uid)
            if found is None:
                log.info(
                    "imap: mailbox=%s folder=%s uid=%d is gone: left alone",
                    self.mailbox.name,
                    folder,
                    uid,
                )
                return [ActionResult(a, False, GONE_DETAIL) for a in actions]
            flags = set(found.get(b"FLAGS", ()))
            header = next((v for k, v in found.items() if k.startswith(b"BODY[HEADER")), b"")
            self._message_id = (
                BytesHeaderParser().parsebytes(bytes(header or b"")).get("Message-ID")
            )
            return self._apply_all(client, info, folder, uid, flags, actions)

    def _apply_all(
        self,
        client: IMAPClient,
        info: dict[bytes, Any],
        folder: str,
        uid: int,
        flags: set[bytes],
        actions: Sequence[MailboxAction],
    ) -> list[ActionResult]:
        results: dict[int, ActionResult] = {}
        wanted: list[bytes] = []
        for i, action in enumerate(actions):
            if action.action == "mark_read":
                wanted.append(SEEN)
                results[i] = ActionResult(action, True, "\\Seen set")
            elif action.action == "categorize":
                permanent = info.get(b"PERMANENTFLAGS", ())
                if b"\\*" not in permanent:
                    results[i] = ActionResult(
                        action, False, "the server keeps no keywords in this folder"
                    )
                    continue
                keyword = "".join(c for c in (action.category or "") if c.isalnum() or c in "-_")
                wanted.append(keyword.encode())
                results[i] = ActionResult(action, True, f"keyword {keyword} set")
            elif action.action not in ("move", "delete"):
                raise ValueError(f"unknown mailbox action {action.action}")
        missing = [f for f in wanted if f not in flags]
        if missing:
            self._count(1)
            client.add_flags([uid], missing, silent=True)
        gone = False
        for i, action in enumerate(actions):
            if action.action not in ("move", "delete"):
                continue
            if gone:
                results[i] = ActionResult(action, False, "moved by an earlier action")
            elif action.action == "move":
                results[i] = self._move(client, folder, uid, flags, action)
                gone = True
            else:
                self._expunge(client, uid)
                results[i] = ActionResult(action, True, "deleted")
                gone = True
        return [results[i] for i in range(len(actions))]

    def _move(
        self, client: IMAPClient, folder: str, uid: int, flags: set[bytes], action: MailboxAction
    ) -> ActionResult:
        target_name = action.folder or "Archive"
        target = self._server_name(target_name)
        if target == self._server_name(folder):
            return ActionResult(action, True, f"already in {target_name}")
        if client.has_capability("MOVE"):
            self._with_folder(client, target, lambda: client.move([uid], target))
        else:
            # COPY + \\Deleted + EXPUNGE: an attempt that died after its COPY left a copy in the
            # target (found by Message-ID) or the \\Deleted flag; a retry does not copy again.
            if DELETED not in flags and not self._copied(client, folder, target):
                self._with_folder(client, target, lambda: client.copy([uid], target))
            self._expunge(client, uid)
        return ActionResult(action, True, f"moved to {target_name}")

    def _copied(self, client: IMAPClient, folder: str, target: str) -> bool:
        """Whether `target` already holds a message with this one's Message-ID (EXAMINE,
        SEARCH, then `folder` selected again); False when the target does not exist yet."""
        message_id = str(self._message_id or "").strip()
        if not message_id:
            return False
        try:
            try:
                self._count(1)
                client.select_folder(target, readonly=True)
            except IMAPClientError as exc:
                if isinstance(exc, IMAPClientAbortError):
                    raise
                return False  # no such folder: nothing copied there
            self._count(1)
            return bool(client.search(["HEADER", "Message-ID", message_id]))
        finally:  # a failed SELECT leaves no folder selected either (RFC 3501)
            self._select(folder, readonly=False)

    def _with_folder(self, client: IMAPClient, target: str, command: Any) -> None:
        """Run a MOVE/COPY/APPEND into `target`; when the server says the folder is missing
        ([TRYCREATE], RFC 3501), create it and run the command once more."""
        try:
            self._count(1)
            command()
        except IMAPClientError as exc:
            if "[TRYCREATE]" not in str(exc) or isinstance(exc, IMAPClientAbortError):
                raise
            self._create(client, target)
            self._count(1)
            command()

    def _create(self, client: IMAPClient, target: str) -> None:
        """CREATE, where another worker creating it first ([ALREADYEXISTS], RFC 5530) is
        success; a server without that code is asked whether the folder exists."""
        try:
            self._count(1)
            client.create_folder(target)
        except IMAPClientError as exc:
            if isinstance(exc, IMAPClientAbortError):
                raise
            if "[ALREADYEXISTS]" in str(exc):
                return
            self._count(1)
            if not client.folder_exists(target):
                raise

    def append(self, folder: str, raw: bytes) -> None:
        """A copy of mail we sent in `folder` (SMTP keeps none), marked \\Seen."""
        with self._failures(f": append to {folder}", then_close=True):
            client = self._connect()
            target = self._server_name(folder)
            self._with_folder(
                client,
                target,
                lambda: client.append(target, raw, flags=[SEEN], msg_time=datetime.now(UTC)),
            )

    def send_mime(self, raw: bytes) -> str:  # noqa: ARG002
        raise NotSupported(f"imap {self.mailbox.name}: IMAP does not send; mail goes by SMTP")

    def _expunge(self, client: IMAPClient, uid: int) -> None:
        self._count(2)
        client.add_flags([uid], [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])
        else:
            client.expunge()


def failure(exc: BaseException, where: str, hint: str = "") -> Exception:
    """An IMAP failure as the pipeline knows it: `SourceBusy` when the server asks for quiet,
    `ImapUnavailable` when the connection dropped or the server failed for a moment, else
    `ImapError`."""
    message = f"{where}: {_plain(exc)}{hint}"
    delay = busy_delay(str(exc))
    if delay is not None:
        return SourceBusy(message, delay)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return ImapError(message)  # a certificate or TLS setting: not fixed by waiting
    if isinstance(exc, IMAPClientAbortError | OSError) or "[INUSE]" in str(exc):
        return ImapUnavailable(message)
    return ImapError(message)


def busy_delay(text: str) -> float | None:
    """Seconds to keep quiet when a server's answer asks for it, else None."""
    suggested = _SUGGESTED.search(text)
    if suggested:
        return min(int(suggested.group(1)) / 1000.0, MAX_BACK_OFF)
    for code in _CODE.findall(text):
        if code in BUSY_CODES:
            return BUSY_CODES[code]
    return None


def _gmail_thread(data: dict[bytes, Any]) -> str | None:
    thread = data.get(b"X-GM-THRID")
    return f"gmail-thread:{int(thread)}" if thread is not None else None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _plain(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__
