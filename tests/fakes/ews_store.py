"""Mailbox state of the fake EWS: users, folders, messages, calendar items and item sync.

Ids behave as EWS ids do ("EWS identifiers in Exchange"): opaque base64 strings; the ``ChangeKey``
changes with every modification; an item moved to another folder gets a new ``ItemId`` and the
old one answers ErrorItemNotFound ("Move and copy email messages by using EWS").

SyncFolderItems ("SyncFolderItems operation", "Synchronize items by using EWS"): every folder keeps
an append-only log of (change, item id). A sync state is an opaque string encoding the folder, the
log position it was issued at and the store's epoch, sealed with an HMAC; a state that does not
verify, belongs to another folder or predates :meth:`EwsStore.corrupt_sync_states` is
ErrorInvalidSyncStateData. A round coalesces the log from that position per item (create+update
= create, create+delete = nothing) and stops before the ``MaxChangesReturned + 1``-th item, so a
page never splits one item's changes. Creates and updates carry the item's current properties.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.header
import email.parser
import email.utils
import gzip
import hashlib
import hmac
import os
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tests.fakes.ews_xml import EwsError, PropKey, format_datetime, parse_datetime

# Well-known folders of a fresh Exchange 2016 mailbox: distinguished id, display name, folder
# class ("DistinguishedFolderId"). The root ("root", no display name) holds "Top of Information
# Store" (msgfolderroot), which holds the rest.
WELL_KNOWN = (
    ("msgfolderroot", "Top of Information Store", None),
    ("inbox", "Inbox", "IPF.Note"),
    ("drafts", "Drafts", "IPF.Note"),
    ("sentitems", "Sent Items", "IPF.Note"),
    ("deleteditems", "Deleted Items", "IPF.Note"),
    ("outbox", "Outbox", "IPF.Note"),
    ("junkemail", "Junk Email", "IPF.Note"),
    ("archive", "Archive", "IPF.Note"),
    ("calendar", "Calendar", "IPF.Appointment"),
    ("contacts", "Contacts", "IPF.Contact"),
    ("tasks", "Tasks", "IPF.Task"),
    ("notes", "Notes", "IPF.StickyNote"),
    ("journal", "Journal", "IPF.Journal"),
)

FlagStatus = Literal["NotFlagged", "Flagged", "Complete"]
ChangeOp = Literal["C", "U", "D", "R"]  # create, update, delete, read-flag-only update

# Follow-up flag as MAPI properties (MS-OXOFLAG 2.2.1): PidTagFlagStatus (0 none, 1 complete,
# 2 flagged), PidTagFlagCompleteTime, PidLidTaskStartDate / PidLidTaskDueDate (PSETID_Task).
TASK_SET = "00062003-0000-0000-c000-000000000046"
FLAG_STATUS = PropKey(tag=0x1090)
FLAG_COMPLETE_TIME = PropKey(tag=0x1091)
TASK_START = PropKey(set_id=TASK_SET, id=0x8104)
TASK_DUE = PropKey(set_id=TASK_SET, id=0x8105)
FLAG_KEYS = frozenset({FLAG_STATUS, FLAG_COMPLETE_TIME, TASK_START, TASK_DUE})

_ID_MAGIC = b"\x00\x00FakeEws"
_ITEM, _FOLDER = b"I", b"F"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def aware(value: dt.datetime) -> dt.datetime:
    """Naive datetimes given by tests mean UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _new_id(kind: bytes) -> str:
    return base64.b64encode(_ID_MAGIC + kind + os.urandom(24)).decode("ascii")


def check_id(value: str, kind: bytes) -> None:
    """ErrorInvalidIdMalformed unless ``value`` looks like an id this server issues."""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise EwsError("ErrorInvalidIdMalformed") from None
    if not raw.startswith(_ID_MAGIC + kind):
        raise EwsError("ErrorInvalidIdMalformed")


def _change_key(version: int) -> str:
    return base64.b64encode(b"CQAAABYA" + version.to_bytes(4, "big")).decode("ascii")


@dataclass
class Flag:
    """The follow-up flag ("Flag", "FlagStatus"): NotFlagged, Flagged or Complete."""

    status: FlagStatus = "NotFlagged"
    start: dt.datetime | None = None
    due: dt.datetime | None = None
    complete: dt.datetime | None = None


@dataclass
class ExtValue:
    """A stored extended property: its ``PropertyType`` and value(s) as EWS text."""

    property_type: str
    value: str | tuple[str, ...]


@dataclass(eq=False)
class Item:
    id: str
    mailbox: str
    folder_id: str
    kind: Literal["Message", "CalendarItem"]
    mime: bytes
    subject: str
    received: dt.datetime
    version: int = 1
    message_id: str | None = None
    conversation_id: str = ""
    sent: dt.datetime | None = None
    sender: tuple[str, str] | None = None
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    in_reply_to: str | None = None
    references: str | None = None
    has_attachments: bool = False
    is_read: bool = False
    categories: list[str] = field(default_factory=list)
    flag: Flag = field(default_factory=Flag)
    modified: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    location: str | None = None
    extended: dict[PropKey, ExtValue] = field(default_factory=dict)

    @property
    def changekey(self) -> str:
        return _change_key(self.version)


@dataclass(eq=False)
class Folder:
    id: str
    mailbox: str
    name: str
    parent_id: str | None
    folder_class: str | None
    distinguished: str | None = None
    version: int = 1
    items: dict[str, Item] = field(default_factory=dict)
    log: list[tuple[ChangeOp, str]] = field(default_factory=list)

    @property
    def changekey(self) -> str:
        return _change_key(self.version)


@dataclass(eq=False)
class Mailbox:
    address: str
    display_name: str
    password: str | None
    impersonation: bool = False
    delegates: set[str] = field(default_factory=set)
    folders: dict[str, Folder] = field(default_factory=dict)
    distinguished: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemState:
    """A snapshot of an item for assertions."""

    id: str
    changekey: str
    folder: str
    folder_id: str
    subject: str
    is_read: bool
    categories: tuple[str, ...]
    flag: Flag
    mime: bytes
    kind: str
    start: dt.datetime | None
    end: dt.datetime | None


@dataclass(frozen=True)
class SyncPage:
    changes: list[tuple[ChangeOp, Item | str]]
    position: int
    includes_last: bool


_HEADERS = email.parser.BytesHeaderParser()  # compat32: fast; RFC 2047 decoded on demand
_ATTACHMENT = re.compile(rb"content-disposition:\s*attachment", re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _header(mime: bytes) -> Callable[[str], str | None]:
    """Header lookup over the header block only (bulk delivery parses thousands)."""
    end = _BLANK_LINE.search(mime)
    headers = _HEADERS.parsebytes(mime[: end.start()] if end else mime)

    def get(name: str) -> str | None:
        value = headers.get(name)
        if value is None:
            return None
        text = str(value)
        if "=?" in text:
            text = str(email.header.make_header(email.header.decode_header(text)))
        return " ".join(text.split()) or None

    return get


def _addresses(value: str | None) -> list[tuple[str, str]]:
    return [(n, a) for n, a in email.utils.getaddresses([value]) if a] if value else []


def _conversation_id(
    message_id: str | None, references: str | None, in_reply_to: str | None
) -> str:
    """One id per thread: the thread root's Message-ID (first of References) hashed, as opaque as
    EWS ConversationIds are."""
    root = (references or "").split() or (in_reply_to or "").split()
    seed = root[0] if root else message_id or os.urandom(8).hex()
    digest = hashlib.sha256(seed.encode()).digest()[:16]
    return base64.b64encode(b"AAQkA" + digest).decode("ascii")


class EwsStore:
    """All mailboxes of the fake; every method runs under the shared lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.mailboxes: dict[str, Mailbox] = {}
        self.folders: dict[str, Folder] = {}
        self.items: dict[str, Item] = {}
        self.read_flag_changes = False
        self._epoch = 0
        self._secret = os.urandom(16)

    # --- mailboxes and folders --------------------------------------------------------------------

    def add_user(
        self, address: str, password: str | None, display_name: str | None, impersonation: bool
    ) -> Mailbox:
        with self.lock:
            key = address.lower()
            if key in self.mailboxes:
                raise ValueError(f"user {address} exists")
            box = Mailbox(address, display_name or address.split("@")[0], password, impersonation)
            self.mailboxes[key] = box
            root = self._new_folder(box, "", None, None, "root")
            top = self._new_folder(box, WELL_KNOWN[0][1], root.id, None, WELL_KNOWN[0][0])
            for distinguished, name, folder_class in WELL_KNOWN[1:]:
                self._new_folder(box, name, top.id, folder_class, distinguished)
            return box

    def mailbox(self, address: str) -> Mailbox:
        with self.lock:
            try:
                return self.mailboxes[address.lower()]
            except KeyError:
                raise EwsError("ErrorNonExistentMailbox") from None

    def _new_folder(
        self,
        box: Mailbox,
        name: str,
        parent_id: str | None,
        folder_class: str | None,
        distinguished: str | None = None,
    ) -> Folder:
        folder = Folder(_new_id(_FOLDER), box.address, name, parent_id, folder_class, distinguished)
        box.folders[folder.id] = folder
        self.folders[folder.id] = folder
        if distinguished:
            box.distinguished[distinguished] = folder.id
        return folder

    def add_folder(
        self, box: Mailbox, name: str, parent: Folder, folder_class: str | None
    ) -> Folder:
        with self.lock:
            if any(f.name.lower() == name.lower() for f in self.children(parent)):
                raise EwsError("ErrorFolderExists")
            parent.version += 1
            return self._new_folder(box, name, parent.id, folder_class or "IPF.Note")

    def delete_folder(self, folder: Folder) -> None:
        """Remove a folder, its subfolders and their items (their ids are gone)."""
        with self.lock:
            if folder.distinguished:
                raise ValueError("the fake does not delete well-known folders")
            for sub_folder in [folder, *self.descendants(folder)]:
                for item_id in list(sub_folder.items):
                    self.items.pop(item_id, None)
                self.mailboxes[sub_folder.mailbox.lower()].folders.pop(sub_folder.id, None)
                self.folders.pop(sub_folder.id, None)
            parent = self.folders.get(folder.parent_id or "")
            if parent is not None:
                parent.version += 1

    def children(self, parent: Folder) -> list[Folder]:
        box = self.mailboxes[parent.mailbox.lower()]
        return [f for f in box.folders.values() if f.parent_id == parent.id]

    def descendants(self, parent: Folder) -> list[Folder]:
        found: list[Folder] = []
        for c in self.children(parent):
            found.append(c)
            found.extend(self.descendants(c))
        return found

    def folder_by_id(self, folder_id: str) -> Folder:
        check_id(folder_id, _FOLDER)
        try:
            return self.folders[folder_id]
        except KeyError:
            raise EwsError("ErrorFolderNotFound") from None

    def distinguished(self, box: Mailbox, name: str) -> Folder:
        try:
            return box.folders[box.distinguished[name.lower()]]
        except KeyError:
            raise EwsError("ErrorFolderNotFound") from None

    def find_folder(self, address: str, ref: str) -> Folder:
        """A folder by distinguished id, folder id, or display-name path under
        msgfolderroot (``"Inbox/Done"``); for test helpers."""
        with self.lock:
            box = self.mailbox(address)
            if ref.lower() in box.distinguished:
                return self.distinguished(box, ref)
            if ref in box.folders:
                return box.folders[ref]
            folder = self.distinguished(box, "msgfolderroot")
            for part in ref.split("/"):
                match = [f for f in self.children(folder) if f.name.lower() == part.lower()]
                if not match:
                    raise KeyError(f"no folder {ref!r} in {address}")
                folder = match[0]
            return folder

    def folder_label(self, folder: Folder) -> str:
        return folder.distinguished or folder.name

    # --- items ------------------------------------------------------------------------------------

    def add_message(
        self,
        folder: Folder,
        mime: bytes,
        received: dt.datetime | None,
        is_read: bool,
        categories: Sequence[str] = (),
    ) -> Item:
        head = _header(mime)
        message_id = head("Message-ID")
        references = head("References")
        in_reply_to = head("In-Reply-To")
        sent = None
        date = head("Date")
        if date:
            try:
                sent = aware(email.utils.parsedate_to_datetime(date))
            except (TypeError, ValueError):
                sent = None
        senders = _addresses(head("From"))
        item = Item(
            id=_new_id(_ITEM),
            mailbox=folder.mailbox,
            folder_id=folder.id,
            kind="Message",
            mime=mime,
            subject=head("Subject") or "",
            received=aware(received) if received else utcnow(),
            message_id=message_id,
            conversation_id=_conversation_id(message_id, references, in_reply_to),
            sent=sent,
            sender=senders[0] if senders else None,
            to=_addresses(head("To")),
            cc=_addresses(head("Cc")),
            in_reply_to=in_reply_to,
            references=references,
            has_attachments=_ATTACHMENT.search(mime) is not None,
            is_read=is_read,
            categories=list(categories),
        )
        with self.lock:
            self._insert(folder, item)
        return item

    def add_event(
        self,
        folder: Folder,
        subject: str,
        start: dt.datetime,
        end: dt.datetime,
        location: str | None,
        extended: dict[PropKey, ExtValue],
    ) -> Item:
        now = utcnow()
        item = Item(
            id=_new_id(_ITEM),
            mailbox=folder.mailbox,
            folder_id=folder.id,
            kind="CalendarItem",
            mime=b"",
            subject=subject,
            received=now,
            conversation_id=_conversation_id(None, None, None),
            is_read=True,
            start=aware(start),
            end=aware(end),
            location=location,
            extended=dict(extended),
        )
        with self.lock:
            self._insert(folder, item)
        return item

    def _insert(self, folder: Folder, item: Item) -> None:
        item.modified = item.modified or utcnow()
        folder.items[item.id] = item
        folder.log.append(("C", item.id))
        self.items[item.id] = item

    def item_by_id(self, item_id: str) -> Item:
        check_id(item_id, _ITEM)
        with self.lock:
            try:
                return self.items[item_id]
            except KeyError:
                raise EwsError("ErrorItemNotFound") from None

    def touch(self, item: Item, op: ChangeOp = "U") -> None:
        """Record a modification: new ChangeKey, LastModifiedTime, an update in the folder log."""
        with self.lock:
            item.version += 1
            item.modified = utcnow()
            logged: ChangeOp = "R" if op == "R" and self.read_flag_changes else "U"
            self.folders[item.folder_id].log.append((logged, item.id))

    def move(self, item: Item, target: Folder) -> Item:
        """Move to ``target``: the item gets a new id (the old one is gone), a Delete in the
        source folder's log and a Create in the target's."""
        with self.lock:
            source = self.folders[item.folder_id]
            del source.items[item.id]
            del self.items[item.id]
            source.log.append(("D", item.id))
            item.id = _new_id(_ITEM)
            item.folder_id = target.id
            item.mailbox = target.mailbox
            item.version += 1
            item.modified = utcnow()
            self._insert(target, item)
            return item

    def delete(self, item: Item) -> None:
        with self.lock:
            source = self.folders[item.folder_id]
            del source.items[item.id]
            del self.items[item.id]
            source.log.append(("D", item.id))

    # --- follow-up flag as MAPI properties -------------------------------------------------------

    def flag_property(self, item: Item, key: PropKey) -> ExtValue | None:
        flag = item.flag
        if key == FLAG_STATUS:
            status = {"NotFlagged": None, "Complete": "1", "Flagged": "2"}[flag.status]
            return None if status is None else ExtValue("Integer", status)
        moments = {FLAG_COMPLETE_TIME: flag.complete, TASK_START: flag.start, TASK_DUE: flag.due}
        moment = moments[key]
        return None if moment is None else ExtValue("SystemTime", format_datetime(moment))

    def set_flag_property(self, item: Item, key: PropKey, value: str | None) -> None:
        flag = item.flag
        if key == FLAG_STATUS:
            code = (value or "0").strip()
            flag.status = "Complete" if code == "1" else "Flagged" if code == "2" else "NotFlagged"
            return
        moment = parse_datetime(value) if value else None
        if key == FLAG_COMPLETE_TIME:
            flag.complete = moment
        elif key == TASK_START:
            flag.start = moment
        else:
            flag.due = moment

    # --- item sync --------------------------------------------------------------------------------

    def corrupt_sync_states(self) -> None:
        with self.lock:
            self._epoch += 1

    def sync_state(self, folder: Folder, position: int) -> str:
        payload = f"{folder.id}|{position}|{self._epoch}".encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).hexdigest()[:16].encode()
        return base64.b64encode(gzip.compress(payload + b"|" + mac, mtime=0)).decode("ascii")

    def sync_position(self, folder: Folder, state: str | None) -> int:
        if not state:
            return 0
        try:
            raw = gzip.decompress(base64.b64decode(state, validate=True))
            folder_id, position, epoch, mac = raw.decode().split("|")
        except (ValueError, OSError, EOFError, zlib.error):
            raise EwsError("ErrorInvalidSyncStateData") from None
        payload = f"{folder_id}|{position}|{epoch}".encode()
        expected = hmac.new(self._secret, payload, hashlib.sha256).hexdigest()[:16]
        if (
            not hmac.compare_digest(expected, mac)
            or folder_id != folder.id
            or int(epoch) != self._epoch
            or int(position) > len(folder.log)
        ):
            raise EwsError("ErrorInvalidSyncStateData")
        return int(position)

    def sync(self, folder: Folder, position: int, max_changes: int, ignore: set[str]) -> SyncPage:
        with self.lock:
            log = folder.log
            pending: dict[str, ChangeOp] = {}
            index = position
            while index < len(log):
                op, item_id = log[index]
                previous = pending.get(item_id)
                if previous is None and len(pending) >= max_changes:
                    break
                if op == "C":
                    pending[item_id] = "C"
                elif op == "D":
                    if previous == "C":
                        del pending[item_id]
                    else:
                        pending[item_id] = "D"
                elif op == "U" and previous in (None, "R"):
                    pending[item_id] = "U"
                elif op == "R" and previous is None:
                    pending[item_id] = "R"
                index += 1
            changes: list[tuple[ChangeOp, Item | str]] = []
            for item_id, op in pending.items():
                if item_id in ignore:
                    continue
                if op == "D":
                    changes.append(("D", item_id))
                elif item_id in folder.items:  # else it left later: its Delete follows
                    changes.append((op, folder.items[item_id]))
            return SyncPage(changes, index, index == len(log))

    # --- snapshots --------------------------------------------------------------------------------

    def state(self, item: Item) -> ItemState:
        with self.lock:
            folder = self.folders[item.folder_id]
            return ItemState(
                id=item.id,
                changekey=item.changekey,
                folder=self.folder_label(folder),
                folder_id=folder.id,
                subject=item.subject,
                is_read=item.is_read,
                categories=tuple(item.categories),
                flag=Flag(item.flag.status, item.flag.start, item.flag.due, item.flag.complete),
                mime=item.mime,
                kind=item.kind,
                start=item.start,
                end=item.end,
            )
