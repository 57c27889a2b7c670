"""An EWS mailbox (on-premises Exchange) as a `MailboxSource`, through exchangelib.

Each watched folder is read with SyncFolderItems, page by page (`page_size` changes a call),
from the sync state the poll stage keeps for it (table `EwsState`, store/cursors.py). A poll
lists at most `max_per_poll` new items; its Sighting's cursor is the sync state of the last page
listed, so the next poll goes on from there (and `more` tells the poller to come back at
once). MIME is fetched with GetItem for up to 100 items a call. A sync state the server no
longer accepts (ErrorInvalidSyncStateData) starts the folder again from scratch: the items are
listed anew under the same ids, which the Ingest table skips, and anything else the map stage
knows by Message-ID, so nothing is filed twice. ErrorServerBusy raises `SourceBusy` with the
server's back-off: the poll ends at once and is scheduled again (never a sleep in the function).

Flag changes (the MAPI follow-up flag and its task dates: exchangelib has no Flag field) and
calendar items (with `calendar:`) are the Sighting's changes (the poll stage sends them to the
`task-changes` queue). Source ids are EWS item ids; they change when an item is moved, so a
moved item is a new sighting of the same mail.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import requests.exceptions
from exchangelib import (  # type: ignore[import-untyped]
    CalendarItem,
    ExtendedProperty,
    Folder,
    ItemId,
    Message,
    Q,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorConnectionFailed,
    ErrorExceededConnectionCount,
    ErrorFolderExists,
    ErrorFolderNotFound,
    ErrorInternalServerTransientError,
    ErrorInvalidIdMalformed,
    ErrorInvalidSyncStateData,
    ErrorItemNotFound,
    ErrorMailboxMoveInProgress,
    ErrorMailboxStoreUnavailable,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    ErrorToFolderNotFound,
    ErrorTooManyObjectsOpened,
    EWSError,
    MalformedResponseError,
)
from exchangelib.folders import SHALLOW, FolderCollection  # type: ignore[import-untyped]
from exchangelib.items.base import ID_ONLY  # type: ignore[import-untyped]
from exchangelib.properties import FieldPath  # type: ignore[import-untyped]
from exchangelib.services import SyncFolderItems  # type: ignore[import-untyped]

from ...core.config import EwsMailbox
from ...core.contracts import EventChange, FlagChange, MailboxAction
from ...core.errors import MailfilerError
from ...store.cursors import Cursor
from ..base import (
    ActionResult,
    NotSupported,
    Sighting,
    SourceBusy,
    SourceMessage,
    SourceUnavailable,
)
from .connection import DEFAULT_BACK_OFF, account_for, key_lock

log = logging.getLogger(__name__)
FETCH_CHUNK = 100  # items per GetItem
STATE_LIMIT = 30_000  # characters a table property holds (UTF-16, 64 KiB)
CALENDAR = "calendar"
TASK_MARKER = ("6c1d3f8e-2b4a-4f0e-9a57-3d2f1c8b7e10", "MailfilerTask")  # as for Graph
DISTINGUISHED = {
    "inbox": "inbox",
    "sentitems": "sent",
    "sent": "sent",
    "calendar": "calendar",
    "deleteditems": "trash",
    "junkemail": "junk",
    "drafts": "drafts",
    "archive": "archive_inbox",
}
# Failures that pass: the same request later may well succeed.
TRANSIENT = (
    ErrorConnectionFailed,
    ErrorInternalServerTransientError,
    ErrorMailboxMoveInProgress,
    ErrorMailboxStoreUnavailable,
    ErrorTimeoutExpired,
    MalformedResponseError,  # an unexpected HTTP answer (a proxy's 502 page, a cut response)
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)
# exchangelib raises a connection lost (ErrorTimeoutExpired with more than one session) or
# closed as ErrorServerBusy with its own 10 s wait: no back-off the server asked for.
NOT_BUSY = ("Reraised from", "Caused by closed connection")
GONE = (ErrorItemNotFound, ErrorInvalidIdMalformed)  # the id no longer names an item
GONE_DETAIL = "the item is gone (moved or deleted): left where it is"
FOLDER_GONE = (ErrorToFolderNotFound, ErrorFolderNotFound)
# Resolved folders per (endpoint, mailbox, path), for every source of this process.
_FOLDERS: dict[tuple[str, str, str], Any] = {}
_FOLDERS_LOCK = threading.Lock()


class EwsError(OSError, MailfilerError):
    """The server refused or failed (not busy): the poll fails, nothing is lost."""


class EwsUnavailable(EwsError, SourceUnavailable):
    """A lost connection or a transient server failure: the work is retried as it is."""


class FlagStatus(ExtendedProperty):  # type: ignore[misc]
    """PidTagFlagStatus (0: none, 1: complete, 2: flagged)."""

    property_tag = 0x1090
    property_type = "Integer"


class FlagStart(ExtendedProperty):  # type: ignore[misc]
    """PidLidTaskStartDate: the flag's start date."""

    distinguished_property_set_id = "Task"
    property_id = 0x8104
    property_type = "SystemTime"


class FlagDue(ExtendedProperty):  # type: ignore[misc]
    """PidLidTaskDueDate: the flag's due date."""

    distinguished_property_set_id = "Task"
    property_id = 0x8105
    property_type = "SystemTime"


class TaskMarker(ExtendedProperty):  # type: ignore[misc]
    """Mailfiler's named property on events it made for a task: "mailfiler:<type>:<key>"."""

    property_set_id = TASK_MARKER[0]
    property_name = TASK_MARKER[1]
    property_type = "String"


def _register() -> None:
    # exchangelib keeps extended properties on the item classes, process-wide: once.
    for cls, name, prop in (
        (Message, "mf_flag_status", FlagStatus),
        (Message, "mf_flag_start", FlagStart),
        (Message, "mf_flag_due", FlagDue),
        (CalendarItem, "mf_task", TaskMarker),
    ):
        if name not in {f.name for f in cls.FIELDS}:
            cls.register(name, prop)


_register()
FLAG_FIELDS = ("mf_flag_status", "mf_flag_start", "mf_flag_due")
FLAG_STATUS = {0: "notFlagged", 1: "complete", 2: "flagged"}


@dataclass
class _Pending:
    state: str | None
    flags: list[FlagChange] = field(default_factory=list)
    events: list[EventChange] = field(default_factory=list)


class EwsSource:
    def __init__(self, mailbox: EwsMailbox, *, account: Any = None) -> None:
        self.mailbox = mailbox
        self._account = account
        self._order: list[str] = []
        self._cache: dict[str, SourceMessage] = {}
        self._folder_of: dict[str, str] = {}
        self._pending: dict[str, _Pending] = {}
        self.more = False  # a folder has more changes than this poll listed
        self.calls = 0  # EWS requests this source made (bench: calls per item)

    # -- connection --------------------------------------------------------------------------

    @property
    def account(self) -> Any:
        if self._account is None:
            self._account = account_for(self.mailbox)
        return self._account

    def _folder(self, name: str, *, create: bool = False) -> Any:
        """A folder by distinguished name ("inbox", "sentitems", "calendar") or by path below
        the top of the mailbox ("Inbox/Cases", created with `create`), resolved once per
        mailbox and process (cached until the server says it is gone: `_forget`)."""
        key = self._folder_key(name)
        with _FOLDERS_LOCK:
            found = _FOLDERS.get(key)
        if found is not None:
            return found
        with key_lock(("folder", *key)):  # one worker resolves, the others wait for it
            with _FOLDERS_LOCK:
                found = _FOLDERS.get(key)
            if found is not None:
                return found
            account = self.account
            lowered = name.lower()
            if lowered in DISTINGUISHED and "/" not in name:
                self.calls += 1
                folder = getattr(account, DISTINGUISHED[lowered])
            else:
                folder = self._walk(name, create=create)
            with _FOLDERS_LOCK:
                return _FOLDERS.setdefault(key, folder)

    def _folder_key(self, name: str) -> tuple[str, str, str]:
        return (self.mailbox.endpoint, self.mailbox.email.lower(), name.strip("/").lower())

    def _forget(self, name: str) -> None:
        """The server no longer knows the cached folder (deleted, recreated): look again."""
        with _FOLDERS_LOCK:
            _FOLDERS.pop(self._folder_key(name), None)

    def _walk(self, path: str, *, create: bool) -> Any:
        """One FindFolder (shallow, by display name) per path part; never the whole tree. A
        part another worker creates at the same moment (ErrorFolderExists) is read back."""
        account = self.account
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise EwsError(f"ews: folder path {path!r} is empty")
        folder = None
        for i, part in enumerate(parts):
            if i == 0 and part.lower() == "inbox":
                folder = account.inbox  # by its well-known id: its name may be localised
                continue
            if folder is None:
                folder = account.msg_folder_root
            found = self._child(folder, part)
            if found is None:
                if not create:
                    raise EwsError(f"ews: folder {path!r} does not exist in {self.mailbox.email}")
                found = self._create(folder, part, path)
            folder = found
        return folder

    def _child(self, parent: Any, name: str) -> Any:
        self.calls += 1
        children = FolderCollection(account=self.account, folders=[parent]).find_folders(
            q=Q(name=name), depth=SHALLOW
        )
        wanted = name.casefold()
        return next((c for c in children if (c.name or "").casefold() == wanted), None)

    def _create(self, parent: Any, name: str, path: str) -> Any:
        self.calls += 1
        folder = Folder(parent=parent, name=name)
        try:
            folder.save()
            return folder
        except ErrorFolderExists:  # another worker made it meanwhile: theirs is ours
            found = self._child(parent, name)
            if found is None:
                raise EwsError(f"ews: folder {path!r} exists but cannot be found") from None
            return found

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """exchangelib's errors as a poll or an action knows them: ErrorServerBusy is
        `SourceBusy` (come back after the server's back-off), a lost connection or a
        transient server failure is `EwsUnavailable` (a `SourceUnavailable`: retried as it
        is), any other is `EwsError` (fails with the reason, nothing is lost)."""
        try:
            yield
        except EwsError:
            raise
        except ErrorServerBusy as exc:
            if str(exc).startswith(NOT_BUSY):  # exchangelib's name for a lost connection
                raise EwsUnavailable(f"ews {self.mailbox.email}: {_plain(exc)}") from exc
            raise self._busy(exc) from exc
        except (ErrorExceededConnectionCount, ErrorTooManyObjectsOpened) as exc:
            raise SourceBusy(f"ews {self.mailbox.email}: {_plain(exc)}", DEFAULT_BACK_OFF) from exc
        except TRANSIENT as exc:
            raise EwsUnavailable(f"ews {self.mailbox.email}: {_plain(exc)}") from exc
        except (EWSError, OSError) as exc:
            raise EwsError(f"ews {self.mailbox.email}: {_plain(exc)}") from exc

    def _busy(self, exc: Any) -> SourceBusy:
        return SourceBusy(
            f"ews {self.mailbox.email}: server busy", float(exc.back_off or DEFAULT_BACK_OFF)
        )

    def close(self) -> None:
        """exchangelib keeps its connection pool per configuration, shared by mailboxes; the
        account and the resolved folders stay cached for the next poll or action."""

    # -- MailboxSource -----------------------------------------------------------------------

    def poll(self, cursor: Cursor) -> Sighting:
        """What changed in each watched folder (and the calendar) since its sync state in
        `cursor`: new items, flag and event changes, and the sync states to go on from."""
        ids: list[str] = []
        self._pending = {}
        self.more = False
        known = {folder.lower(): value for folder, value in cursor.items()}  # no case in EWS
        folders = list(self.mailbox.folders)
        if self.mailbox.calendar is not None and CALENDAR not in folders:
            folders.append(CALENDAR)
        with self._translated():
            for name in folders:
                state = (known.get(name.lower()) or {}).get("SyncState")
                budget = self.mailbox.max_per_poll - len(ids)
                if budget <= 0:
                    self.more = True
                    break
                try:
                    ids.extend(self._sync(name, str(state) if state is not None else None, budget))
                except FOLDER_GONE:  # deleted or recreated: the next poll resolves it again
                    self._forget(name)
                    raise
        self._order = ids
        saved: dict[str, dict[str, str]] = {}
        for name, pending in self._pending.items():
            state = pending.state or ""
            if len(state) > STATE_LIMIT:
                raise EwsError(f"ews: the sync state of {name} is too large to keep")
            saved[name] = {"SyncState": state}
        changes: list[FlagChange | EventChange] = []
        for pending in self._pending.values():
            changes += [*pending.flags, *pending.events]
        return Sighting(
            refs=ids,
            incremental=True,
            changes=changes,
            cursor=saved,
            more=self.more,
        )

    def _sync(self, name: str, state: str | None, budget: int) -> list[str]:
        folder = self._folder(name)
        calendar = name.lower() == CALENDAR
        fields = self._fields(folder, calendar)
        pending = _Pending(state)
        ids: list[str] = []
        since = self.mailbox.since
        while len(ids) < budget:
            service = SyncFolderItems(account=self.account)
            try:
                self.calls += 1
                changes = list(
                    service.call(
                        folder=folder,
                        shape=ID_ONLY,
                        additional_fields=fields,
                        sync_state=pending.state,
                        ignore=None,
                        max_changes_returned=min(self.mailbox.page_size, budget - len(ids)),
                        sync_scope=None,
                    )
                )
            except ErrorInvalidSyncStateData:
                if pending.state is None:
                    raise
                log.warning(
                    "ews: mailbox=%s folder=%s sync state refused: resync from scratch",
                    self.mailbox.name,
                    name,
                )
                pending = _Pending(None)
                continue
            for kind, item in changes:
                if calendar:
                    self._calendar_change(pending, kind, item)
                    continue
                if kind == "create" and _received_since(item, since):
                    ids.append(item.id)
                    self._folder_of[item.id] = name
                if kind in ("create", "update") and self.mailbox.tasks is not None:
                    self._flag_change(pending, kind, item)
            unchanged = service.sync_state == pending.state
            pending.state = service.sync_state
            self._pending[name] = pending
            if service.includes_last_item_in_range or unchanged:
                return ids
        self.more = True
        return ids

    def _fields(self, folder: Any, calendar: bool) -> set[Any]:
        wanted = ["subject", "start", "end", "mf_task"] if calendar else ["datetime_received"]
        if not calendar and self.mailbox.tasks is not None:
            wanted += ["message_id", *FLAG_FIELDS]
        paths: set[FieldPath] = {
            f for f in folder.normalize_fields(fields=wanted) if not f.field.is_attribute
        }
        return paths

    def _flag_change(self, pending: _Pending, kind: str, item: Any) -> None:
        status = FLAG_STATUS.get(int(getattr(item, "mf_flag_status", None) or 0), "notFlagged")
        message_id = getattr(item, "message_id", None)
        if not message_id or (kind == "create" and status == "notFlagged"):
            return  # a new unflagged mail: nothing for tasks
        pending.flags.append(
            FlagChange(
                mailbox=self.mailbox.name,
                message_id=str(message_id),
                status=status,
                start=_aware(getattr(item, "mf_flag_start", None)),
                due=_aware(getattr(item, "mf_flag_due", None)),
            )
        )

    def _calendar_change(self, pending: _Pending, kind: str, item: Any) -> None:
        if kind == "delete":
            event_id = getattr(item, "id", None)
            if event_id:
                pending.events.append(
                    EventChange(mailbox=self.mailbox.name, event_id=event_id, change="deleted")
                )
            return
        if kind not in ("create", "update") or not isinstance(item, CalendarItem):
            return
        pending.events.append(
            EventChange(
                mailbox=self.mailbox.name,
                event_id=item.id,
                change="created" if kind == "create" else "updated",
                subject=item.subject,
                start=_aware(item.start),
                end=_aware(item.end),
                task_property=getattr(item, "mf_task", None),
            )
        )

    def read(self, item_id: str) -> SourceMessage:
        found = self._cache.pop(item_id, None)
        if found is not None:
            return found
        start = self._order.index(item_id) if item_id in self._order else 0
        batch = self._order[start : start + FETCH_CHUNK] or [item_id]
        with self._translated():
            self.calls += 1
            items = list(
                self.account.fetch(
                    ids=[ItemId(id=i) for i in batch],
                    only_fields=["mime_content", "datetime_received", "is_read", "conversation_id"],
                    chunk_size=FETCH_CHUNK,
                )
            )
        for ident, item in zip(batch, items, strict=False):
            if isinstance(item, Exception) or not getattr(item, "mime_content", None):
                continue  # deleted since the sync: nothing to file, nothing lost
            conversation = getattr(item, "conversation_id", None)
            self._cache[ident] = SourceMessage(
                source_id=ident,
                raw=bytes(item.mime_content),
                folder=self._folder_of.get(ident),
                flags=("\\Seen",) if item.is_read else (),
                received_at=_aware(item.datetime_received),
                conversation_id=f"ews:{conversation.id}" if conversation is not None else None,
            )
        found = self._cache.pop(item_id, None)
        if found is None:
            raise EwsError(f"ews {self.mailbox.email}: item is gone")
        return found

    def send_mime(self, raw: bytes) -> str:
        """CreateItem with MessageDisposition SendAndSaveCopy: sent, and kept in Sent Items."""
        with self._translated():
            self.calls += 1
            message = Message(account=self.account, folder=self.account.sent, mime_content=raw)
            message.send_and_save()
        return "sent by EWS (SendAndSaveCopy)"

    def append(self, folder: str, raw: bytes) -> None:  # noqa: ARG002
        raise NotSupported(f"ews {self.mailbox.name}: EWS keeps its own copy of what it sends")

    def apply(self, item_id: str, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        """Mark read and categories in one UpdateItem, then move (the item gets a new id there)
        or delete (to Deleted Items): one GetItem first, so at most four requests.

        Safe to retry: a busy server raises `SourceBusy`, a lost connection `EwsUnavailable`,
        and a retry does only what is left. The item is found by its id alone, which a move
        changes: once moved (by us or by the user) the old id is gone and nothing is done
        again; a mail is never searched for and moved back."""
        with self._translated():
            self.calls += 1
            (item,) = list(
                self.account.fetch(
                    ids=[ItemId(id=item_id)],
                    only_fields=["is_read", "categories", "parent_folder_id"],
                )
            )
            if isinstance(item, ErrorServerBusy):
                raise item
            if isinstance(item, GONE):
                return self._gone(actions)
            if isinstance(item, Exception):
                raise item
            return self._apply_all(item, actions)

    def _gone(self, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        log.info("ews: mailbox=%s item is gone (moved or deleted): left alone", self.mailbox.name)
        return [ActionResult(a, False, GONE_DETAIL) for a in actions]

    def _apply_all(self, item: Any, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        results: dict[int, ActionResult] = {}
        fields: list[str] = []
        for i, action in enumerate(actions):
            if action.action == "mark_read":
                if not item.is_read:
                    item.is_read = True
                    fields.append("is_read")
                results[i] = ActionResult(action, True, "marked read")
            elif action.action == "categorize":
                category = action.category or ""
                if category not in (item.categories or []):
                    item.categories = [*(item.categories or []), category]
                    if "categories" not in fields:
                        fields.append("categories")
                results[i] = ActionResult(action, True, f"category {category}")
            elif action.action not in ("move", "delete"):
                raise ValueError(f"unknown mailbox action {action.action}")
        if fields:
            self.calls += 1
            try:
                item.save(update_fields=fields)
            except GONE:  # moved or deleted by the user since our GetItem
                return self._gone(actions)
        gone = False
        for i, action in enumerate(actions):
            if action.action not in ("move", "delete"):
                continue
            if gone:
                results[i] = ActionResult(action, False, "the item was moved by an earlier action")
            elif action.action == "move":
                results[i] = self._move(item, action.folder or "Archive", action)
                gone = True
            else:
                self.calls += 1
                try:
                    item.move_to_trash()
                    results[i] = ActionResult(action, True, "moved to Deleted Items")
                except GONE:
                    results[i] = ActionResult(action, False, GONE_DETAIL)
                gone = True
        return [results[i] for i in range(len(actions))]

    def _move(self, item: Any, target: str, action: MailboxAction) -> ActionResult:
        folder = self._folder(target, create=True)
        parent = getattr(item, "parent_folder_id", None)
        if parent is not None and parent.id == folder.id:
            return ActionResult(action, True, f"already in {target}")
        try:
            try:
                self.calls += 1
                item.move(to_folder=folder)
            except FOLDER_GONE:  # deleted (or recreated) since we cached it: resolve it again
                log.info("ews: mailbox=%s folder %r is gone: again", self.mailbox.name, target)
                self._forget(target)
                folder = self._folder(target, create=True)
                self.calls += 1
                item.move(to_folder=folder)
        except GONE:  # moved or deleted by the user since our GetItem
            return ActionResult(action, False, GONE_DETAIL)
        return ActionResult(action, True, f"moved to {target}")


def _received_since(item: Any, since: date | None) -> bool:
    if since is None:
        return True
    received = getattr(item, "datetime_received", None)
    return received is None or received.date() >= since


def _aware(value: Any) -> datetime | None:
    """exchangelib's EWSDateTime (or EWSDate) as a plain UTC datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return datetime.fromtimestamp(value.timestamp(), UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def _plain(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}"
