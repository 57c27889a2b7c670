"""Mailbox state of the fake Graph: users, folders, messages, events, and delta sync state.

Every change gets a sequence number; a delta token remembers the sequence number it was issued at,
so the next round returns what changed since (new, updated and moved-in messages in full, moved-out
and deleted ones as ``{"@odata.type": "#microsoft.graph.message", "id", "@removed":
{"reason": "deleted"}}``), as "Get incremental changes to messages in a folder"
(concepts/delta-query-messages.md) and "message: delta" (api-reference/v1.0/api/message-delta.md)
describe. Every mutation reports :class:`Change` records to a callback, from which the
subscription registry builds change notifications.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from tests.fakes.graph_model import (
    JSON,
    ROOT,
    WELL_KNOWN_FOLDERS,
    Event,
    Flag,
    Folder,
    GraphError,
    Mailbox,
    Message,
    conversation_id,
    conversation_index,
    folder_id,
    immutable_message_id,
    message_json,
    new_guid,
    opaque_id,
    parse_mime,
)

ChangeType = Literal["created", "updated", "deleted"]


def aware(value: dt.datetime) -> dt.datetime:
    """Naive datetimes given by tests mean UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Clock:
    """Wall clock with an offset tests can advance (token and subscription expiry use it)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class Change:
    """One change to report: ``folder_id`` set for folder-scoped subscriptions, ``mailbox`` for
    mailbox-wide ones (users/{id}/messages, users/{id}/events)."""

    kind: Literal["message", "event"]
    user_id: str
    item_id: str
    change_type: ChangeType
    etag: str
    folder_id: str | None = None
    mailbox: bool = True


@dataclass
class DeltaState:
    user_id: str
    folder_id: str
    select: list[str] | None
    received_filter: tuple[str, dt.datetime] | None
    change_type: str | None
    since: int | None = None  # sequence number of the round's start (None: initial sync)
    pending: list[tuple[str, bool]] | None = None  # skiptoken: (id, removed) still to serve
    upto: int = 0


@dataclass
class DeltaPage:
    items: list[JSON]
    skip_token: str | None
    delta_token: str | None


NOT_FOUND = "The specified object was not found in the store."


@dataclass
class MailStore:
    lock: threading.RLock
    clock: Clock
    on_change: Callable[[list[Change]], None]
    users: dict[str, Mailbox] = field(default_factory=dict)  # by id
    folders: dict[str, dict[str, Folder]] = field(default_factory=dict)  # user id -> id -> folder
    messages: dict[str, dict[str, Message]] = field(default_factory=dict)
    events: dict[str, dict[str, Event]] = field(default_factory=dict)
    tombstones: list[tuple[int, str, str, str]] = field(default_factory=list)
    delta_tokens: dict[str, DeltaState] = field(default_factory=dict)
    seq: int = 0

    # --- users and folders ------------------------------------------------------------------------

    def add_user(
        self,
        key: str,
        *,
        user_id: str | None = None,
        display_name: str | None = None,
        tenant: str | None = None,
    ) -> Mailbox:
        with self.lock:
            for existing in self.users.values():
                if key.lower() in {existing.key.lower(), existing.id.lower()}:
                    return existing
            looks_like_guid = len(key) == 36 and key.count("-") == 4
            uid = user_id or (key if looks_like_guid else new_guid())
            upn = None if looks_like_guid else key
            local = (upn or key).split("@")[0]
            box = Mailbox(key, uid, upn, display_name or local.replace(".", " ").title(), tenant)
            self.users[uid] = box
            root = Folder(folder_id(), uid, "Top of Information Store", None, ROOT, True)
            self.folders[uid] = {root.id: root}
            for name, display in WELL_KNOWN_FOLDERS.items():
                f = Folder(folder_id(), uid, display, root.id, name)
                self.folders[uid][f.id] = f
            self.messages[uid] = {}
            self.events[uid] = {}
            return box

    def mailbox(self, ref: str) -> Mailbox:
        with self.lock:
            needle = ref.strip().lower()
            for box in self.users.values():
                if needle in {box.key.lower(), box.id.lower(), (box.upn or "").lower()}:
                    return box
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{ref}' is invalid.")

    def folder(self, box: Mailbox, ref: str) -> Folder:
        with self.lock:
            folders = self.folders[box.id]
            if ref in folders:
                return folders[ref]
            for f in folders.values():
                if f.well_known and f.well_known == ref.lower():
                    return f
        raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)

    def children(self, box: Mailbox, parent: Folder) -> list[Folder]:
        with self.lock:
            return [f for f in self.folders[box.id].values() if f.parent_id == parent.id]

    def add_folder(self, box: Mailbox, display_name: str, parent: str = ROOT) -> Folder:
        with self.lock:
            parent_folder = self.folder(box, parent)
            if not display_name.strip():
                raise GraphError(400, "ErrorInvalidRequest", "The folder name cannot be empty.")
            for f in self.children(box, parent_folder):
                if f.display_name.lower() == display_name.lower():
                    raise GraphError(
                        409, "ErrorFolderExists", "A folder with the specified name already exists."
                    )
            folder = Folder(folder_id(), box.id, display_name, parent_folder.id)
            self.folders[box.id][folder.id] = folder
            return folder

    # --- messages ---------------------------------------------------------------------------------

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def add_message(
        self,
        box: Mailbox,
        folder_ref: str,
        mime: bytes,
        *,
        flag: Flag | None = None,
        is_read: bool = False,
        categories: Iterable[str] = (),
        received: dt.datetime | None = None,
    ) -> Message:
        parsed = parse_mime(mime)
        with self.lock:
            folder = self.folder(box, folder_ref)
            now = self.clock.now()
            seq = self._next()
            msg_id = immutable_message_id()
            root = parsed.thread_root or parsed.internet_message_id or msg_id
            when = aware(received) if received else now
            msg = Message(
                id=msg_id,
                user_id=box.id,
                folder_id=folder.id,
                mime=mime,
                parsed=parsed,
                received=when.astimezone(dt.UTC),
                created=now,
                modified=now,
                seq=seq,
                folder_seq=seq,
                created_seq=seq,
                is_read=is_read,
                categories=list(categories),
                flag=flag or Flag(),
                importance=parsed.importance,
                conversation_id=conversation_id(root),
                conversation_index=parsed.thread_index
                or conversation_index(root, parsed.depth, parsed.sent or when),
            )
            self.messages[box.id][msg.id] = msg
            self.on_change([Change("message", box.id, msg.id, "created", msg.etag, folder.id)])
            return msg

    def message(self, box: Mailbox, msg_id: str) -> Message:
        with self.lock:
            msg = self.messages[box.id].get(msg_id)
        if msg is None:
            raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
        return msg

    def update_message(
        self,
        box: Mailbox,
        msg_id: str,
        *,
        is_read: bool | None = None,
        categories: Iterable[str] | None = None,
        flag: Flag | None = None,
        importance: str | None = None,
        inference: str | None = None,
        subject: str | None = None,
    ) -> Message:
        with self.lock:
            msg = self.message(box, msg_id)
            if is_read is not None:
                msg.is_read = is_read
            if categories is not None:
                msg.categories = list(categories)
            if flag is not None:
                msg.flag = flag
            if importance is not None:
                msg.importance = importance
            if inference is not None:
                msg.inference = inference
            if subject is not None:
                msg.subject_override = subject
            msg.seq = self._next()
            msg.modified = self.clock.now()
            self.on_change([Change("message", box.id, msg.id, "updated", msg.etag, msg.folder_id)])
            return msg

    def move_message(self, box: Mailbox, msg_id: str, destination: str) -> Message:
        """Move keeps the immutable id. Folder-scoped subscriptions see deleted (source) and
        created (destination); mailbox-wide ones see updated (parentFolderId changed)."""
        with self.lock:
            msg = self.message(box, msg_id)
            target = self.folder(box, destination)
            if target.well_known == ROOT:
                raise GraphError(400, "ErrorInvalidRequest", "Cannot move items to the root.")
            source = msg.folder_id
            if target.id == source:
                return msg
            seq = self._next()
            self.tombstones.append((seq, box.id, source, msg.id))
            msg.folder_id = target.id
            msg.seq = msg.folder_seq = seq
            msg.modified = self.clock.now()
            self.on_change(
                [
                    Change("message", box.id, msg.id, "deleted", msg.etag, source, mailbox=False),
                    Change(
                        "message", box.id, msg.id, "created", msg.etag, target.id, mailbox=False
                    ),
                    Change("message", box.id, msg.id, "updated", msg.etag, None, mailbox=True),
                ]
            )
            return msg

    def delete_message(self, box: Mailbox, msg_id: str, *, permanent: bool = False) -> None:
        """DELETE moves a message to Deleted Items; from there (or ``permanent``) it is gone."""
        with self.lock:
            msg = self.message(box, msg_id)
            deleted = self.folder(box, "deleteditems")
            if not permanent and msg.folder_id != deleted.id:
                self.move_message(box, msg_id, deleted.id)
                return
            seq = self._next()
            self.tombstones.append((seq, box.id, msg.folder_id, msg.id))
            del self.messages[box.id][msg.id]
            self.on_change([Change("message", box.id, msg.id, "deleted", msg.etag, msg.folder_id)])

    def in_folder(self, box: Mailbox, folder: Folder) -> list[Message]:
        with self.lock:
            found = [m for m in self.messages[box.id].values() if m.folder_id == folder.id]
        return sorted(found, key=lambda m: (m.received, m.created_seq), reverse=True)

    # --- delta ------------------------------------------------------------------------------------

    def delta_start(
        self,
        box: Mailbox,
        folder: Folder,
        *,
        select: list[str] | None,
        received_filter: tuple[str, dt.datetime] | None,
        change_type: str | None,
    ) -> DeltaState:
        return DeltaState(box.id, folder.id, select, received_filter, change_type)

    def delta_state(self, token: str) -> DeltaState:
        with self.lock:
            state = self.delta_tokens.get(token)
        if state is None:
            raise GraphError(
                410,
                "syncStateNotFound",
                "The sync state generation is not found or has expired; start a full sync.",
            )
        return state

    def _matches_filter(self, msg: Message, state: DeltaState) -> bool:
        if state.received_filter is None:
            return True
        op, when = state.received_filter
        return msg.received >= when if op == "ge" else msg.received > when

    def delta_page(self, state: DeltaState, page_size: int) -> DeltaPage:
        with self.lock:
            box = self.users[state.user_id]
            if state.pending is None:
                pending: list[tuple[str, bool]] = []
                since = state.since
                folder = self.folders[box.id].get(state.folder_id)
                if folder is None:
                    raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
                current = [m for m in self.in_folder(box, folder) if self._matches_filter(m, state)]
                if since is None:
                    pending = [(m.id, False) for m in current]
                else:
                    for m in current:
                        if m.seq <= since:
                            continue
                        kind = "created" if m.folder_seq > since else "updated"
                        if state.change_type in (None, kind):
                            pending.append((m.id, False))
                    if state.change_type in (None, "deleted"):
                        present = {m.id for m in current}
                        seen: set[str] = set()
                        for seq, uid, fid, mid in self.tombstones:
                            fresh = mid not in present and mid not in seen
                            if seq > since and uid == box.id and fid == folder.id and fresh:
                                seen.add(mid)
                                pending.append((mid, True))
                upto = self.seq
            else:
                pending = list(state.pending)
                upto = state.upto
            page, rest = pending[:page_size], pending[page_size:]
            items: list[JSON] = []
            for mid, removed in page:
                msg = self.messages[box.id].get(mid)
                if removed or msg is None or msg.folder_id != state.folder_id:
                    if removed:
                        items.append(
                            {
                                "@odata.type": "#microsoft.graph.message",
                                "id": mid,
                                "@removed": {"reason": "deleted"},
                            }
                        )
                    continue
                items.append(
                    {"@odata.type": "#microsoft.graph.message"} | message_json(msg, state.select)
                )
            token = secrets.token_urlsafe(24)
            follow = DeltaState(
                state.user_id,
                state.folder_id,
                state.select,
                state.received_filter,
                state.change_type,
            )
            if rest:
                follow.pending, follow.upto = rest, upto
                self.delta_tokens[token] = follow
                return DeltaPage(items, token, None)
            follow.since = upto
            self.delta_tokens[token] = follow
            return DeltaPage(items, None, token)

    def expire_delta_tokens(self) -> int:
        with self.lock:
            count = len(self.delta_tokens)
            self.delta_tokens.clear()
            return count

    # --- events -----------------------------------------------------------------------------------

    def add_event(
        self,
        box: Mailbox,
        subject: str,
        start: dt.datetime,
        end: dt.datetime,
        *,
        extended_properties: Mapping[str, str] | None = None,
        body: JSON | None = None,
        location: str = "",
        categories: Iterable[str] = (),
        is_all_day: bool = False,
        show_as: str = "busy",
        attendees: list[JSON] | None = None,
    ) -> Event:
        with self.lock:
            now = self.clock.now()
            event = Event(
                id=opaque_id(b"\x00\x09\x00\x2e\x00\x00\x00\x00\x01"),
                user_id=box.id,
                subject=subject,
                start=aware(start),
                end=aware(end),
                created=now,
                modified=now,
                seq=self._next(),
                ical_uid="040000008200E00074C5B7101A82E008" + secrets.token_hex(28).upper(),
                organizer=(box.display_name, box.upn or f"{box.id}@example.invalid"),
                body=body or {"contentType": "html", "content": ""},
                location=location,
                categories=list(categories),
                is_all_day=is_all_day,
                show_as=show_as,
                attendees=list(attendees or []),
            )
            for key, value in (extended_properties or {}).items():
                event.extended[key.lower()] = (key, value)
            self.events[box.id][event.id] = event
            self.on_change([Change("event", box.id, event.id, "created", event.etag)])
            return event

    def event(self, box: Mailbox, event_id: str) -> Event:
        with self.lock:
            event = self.events[box.id].get(event_id)
        if event is None:
            raise GraphError(404, "ErrorItemNotFound", NOT_FOUND)
        return event

    def update_event(
        self,
        box: Mailbox,
        event_id: str,
        *,
        subject: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        extended_properties: Mapping[str, str] | None = None,
        body: JSON | None = None,
        location: str | None = None,
        categories: Iterable[str] | None = None,
        show_as: str | None = None,
    ) -> Event:
        with self.lock:
            event = self.event(box, event_id)
            if subject is not None:
                event.subject = subject
            if start is not None:
                event.start = aware(start)
            if end is not None:
                event.end = aware(end)
            if body is not None:
                event.body = dict(body)
            if location is not None:
                event.location = location
            if categories is not None:
                event.categories = list(categories)
            if show_as is not None:
                event.show_as = show_as
            for key, value in (extended_properties or {}).items():
                event.extended[key.lower()] = (key, value)
            event.seq = self._next()
            event.modified = self.clock.now()
            self.on_change([Change("event", box.id, event.id, "updated", event.etag)])
            return event

    def delete_event(self, box: Mailbox, event_id: str) -> None:
        with self.lock:
            event = self.event(box, event_id)
            del self.events[box.id][event.id]
            self._next()
            self.on_change([Change("event", box.id, event.id, "deleted", event.etag)])
