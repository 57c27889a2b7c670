"""An IMAP mailbox as a `MailboxSource`.

The cursor is per folder: UIDVALIDITY and the highest UID queued (table `ImapState`). A poll
asks each folder's STATUS first, so a mailbox with nothing new costs LOGIN, one STATUS per
folder and LOGOUT, whatever its size. New mail is listed by `UID SEARCH UID n:*` (filtered
here: servers answer the highest UID even when it is below n) and fetched in chunks with
`BODY.PEEK[]`, which never sets \\Seen. The cursor moves only once everything listed is queued
(`commit`); a poll that dies halfway lists the rest again next time, and what was queued is
skipped by the Ingest table. A changed UIDVALIDITY starts the folder again: the mail is listed
anew under new source ids, and the map stage recognises it by Message-ID (a sighting, never a
second filing).

Source ids are `<uidvalidity>:<uid>:<folder>`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from ...core.config import ImapMailbox
from ...core.contracts import MailboxAction
from ...store.keys import short_hash
from ...store.stores import IMAP_STATE, Stores
from ..base import ActionResult, SourceMessage

log = logging.getLogger(__name__)
FETCH_CHUNK = 100  # messages per FETCH
SEEN, DELETED, FLAGGED = b"\\Seen", b"\\Deleted", b"\\Flagged"


class ImapError(OSError):
    """The server refused, went away or answered nonsense: the poll fails, nothing is lost."""


def source_id(uidvalidity: int, uid: int, folder: str) -> str:
    return f"{uidvalidity}:{uid}:{folder}"


def parse_source_id(value: str) -> tuple[int, int, str]:
    validity, uid, folder = value.split(":", 2)
    return int(validity), int(uid), folder


class ImapSource:
    incremental = True  # refs() lists what is new since the stored cursor

    def __init__(self, mailbox: ImapMailbox, secret: str, stores: Stores) -> None:
        self.mailbox = mailbox
        self.secret = secret  # the password, or an OAuth2 access token for XOAUTH2
        self.stores = stores
        self.commands = 0  # IMAP commands this source sent (the idle-poll figure)
        self._client: IMAPClient | None = None
        self._selected: tuple[str, bool] | None = None
        self._pending: dict[str, tuple[int, int]] = {}  # folder -> (uidvalidity, highest uid)
        self._order: list[str] = []
        self._cache: dict[str, SourceMessage] = {}
        self._delimiter: str | None = None

    # -- connection --------------------------------------------------------------------------

    def _connect(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        mb = self.mailbox
        context = ssl.create_default_context(cafile=mb.ca_bundle) if mb.tls != "none" else None
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
                client.oauth2_login(mb.username, self.secret)
            else:
                client.login(mb.username, self.secret)
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            raise ImapError(f"imap {mb.host}:{mb.server_port}: {_plain(exc)}") from exc
        self._client = client
        return client

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
            client = self._connect()
            self._count(1)
            found = client.list_folders("", "")  # LIST "" "": the delimiter alone
            self._delimiter = _text(found[0][1]) if found and found[0][1] else "/"
        return folder.replace("/", self._delimiter)

    def _select(self, folder: str, *, readonly: bool) -> dict[bytes, Any]:
        client = self._connect()
        self._count(1)
        info: dict[bytes, Any] = client.select_folder(self._server_name(folder), readonly=readonly)
        self._selected = (folder, readonly)
        return info

    # -- MailboxSource -----------------------------------------------------------------------

    def refs(self) -> Sequence[str]:
        ids: list[str] = []
        table = self.stores.table(IMAP_STATE)
        try:
            client = self._connect()
            for folder in self.mailbox.folders:
                state = table.get(self.mailbox.name, _folder_row(folder)) or {}
                self._count(1)
                status = client.folder_status(
                    self._server_name(folder), [b"UIDVALIDITY", b"UIDNEXT"]
                )
                validity = int(status[b"UIDVALIDITY"])
                last = int(state.get("LastUid", 0)) if state.get("UidValidity") == validity else 0
                if state.get("UidValidity") not in (None, validity):
                    log.warning(
                        "imap: mailbox=%s folder=%s UIDVALIDITY changed: resync",
                        self.mailbox.name,
                        folder,
                    )
                if int(status[b"UIDNEXT"]) - 1 <= last:
                    continue  # nothing new: STATUS was enough
                self._select(folder, readonly=True)
                criteria: list[Any] = ["UID", f"{last + 1}:*"]
                if last == 0 and self.mailbox.since:
                    criteria = ["SINCE", self.mailbox.since]
                self._count(1)
                uids = sorted(u for u in client.search(criteria) if u > last)
                if uids:
                    self._pending[folder] = (validity, uids[-1])
                ids.extend(source_id(validity, uid, folder) for uid in uids)
        except (IMAPClientError, OSError) as exc:
            self.close()
            raise ImapError(f"imap {self.mailbox.host}: {_plain(exc)}") from exc
        self._order = ids
        return ids

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
        try:
            if self._selected is None or self._selected[0] != folder:
                info = self._select(folder, readonly=True)
                if int(info[b"UIDVALIDITY"]) != validity:
                    raise ImapError(f"imap: {folder} changed UIDVALIDITY; the poll starts again")
            client = self._connect()
            self._count(1)
            answers = client.fetch(sorted(uids), [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
        except (IMAPClientError, OSError) as exc:
            self.close()
            raise ImapError(f"imap {self.mailbox.host}: {_plain(exc)}") from exc
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
            )
        found = self._cache.pop(item, None)
        if found is None:
            # Expunged between SEARCH and FETCH: nothing to file, and nothing lost.
            raise ImapError(f"imap: {folder} UID {uid} is gone")
        return found

    def commit(self, now: datetime) -> None:
        table = self.stores.table(IMAP_STATE)
        for folder, (validity, last) in self._pending.items():
            table.upsert(
                {
                    "PartitionKey": self.mailbox.name,
                    "RowKey": _folder_row(folder),
                    "Folder": folder,
                    "UidValidity": validity,
                    "LastUid": last,
                    "At": now,
                }
            )
        self._pending.clear()
        self.close()

    def apply(self, item: str, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        """\\Seen, MOVE (or COPY + \\Deleted + UID EXPUNGE), a keyword, delete; the target folder
        is created when missing. A message whose folder changed UIDVALIDITY is reported gone."""
        validity, uid, folder = parse_source_id(item)
        results: list[ActionResult] = []
        try:
            info = self._select(folder, readonly=False)
            if int(info[b"UIDVALIDITY"]) != validity:
                return [
                    ActionResult(a, False, "the folder was rebuilt; message not found")
                    for a in actions
                ]
            client = self._connect()
            for action in actions:
                results.append(self._apply_one(client, info, uid, action))
        except (IMAPClientError, OSError) as exc:
            raise ImapError(f"imap {self.mailbox.host}: {_plain(exc)}") from exc
        finally:
            self.close()
        return results

    def _apply_one(
        self, client: IMAPClient, info: dict[bytes, Any], uid: int, action: MailboxAction
    ) -> ActionResult:
        self._count(1)
        if not client.search(["UID", str(uid)]):
            return ActionResult(action, False, "the message is gone from the folder")
        if action.action == "mark_read":
            self._count(1)
            client.add_flags([uid], [SEEN], silent=True)
            return ActionResult(action, True, "\\Seen set")
        if action.action == "categorize":
            permanent = info.get(b"PERMANENTFLAGS", ())
            if b"\\*" not in permanent:
                return ActionResult(action, False, "the server keeps no keywords in this folder")
            keyword = "".join(c for c in (action.category or "") if c.isalnum() or c in "-_")
            self._count(1)
            client.add_flags([uid], [keyword.encode()], silent=True)
            return ActionResult(action, True, f"keyword {keyword} set")
        if action.action == "move":
            target = self._server_name(action.folder or "Archive")
            self._count(1)
            if not client.folder_exists(target):
                self._count(1)
                try:
                    client.create_folder(target)
                except IMAPClientError:
                    # Another worker created it meanwhile ([ALREADYEXISTS]); anything else
                    # shows when we look again.
                    self._count(1)
                    if not client.folder_exists(target):
                        raise
            self._count(1)
            if client.has_capability("MOVE"):
                client.move([uid], target)
            else:
                client.copy([uid], target)
                self._expunge(client, uid)
            return ActionResult(action, True, f"moved to {target}")
        if action.action == "delete":
            self._expunge(client, uid)
            return ActionResult(action, True, "deleted")
        raise ValueError(f"unknown mailbox action {action.action}")

    def _expunge(self, client: IMAPClient, uid: int) -> None:
        self._count(2)
        client.add_flags([uid], [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])
        else:
            client.expunge()


def _folder_row(folder: str) -> str:
    return "folder-" + short_hash(folder)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _plain(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__
