"""A Graph mailbox as a `MailboxSource`: delta queries list what is new, a fetch reads one
message (its state and its MIME), and mailbox actions are Graph PATCH / move / DELETE calls.

Ids are immutable ids (`Prefer: IdType="ImmutableId"`), so a source id survives moves. Every
call for one mailbox holds one of four slots shared by all workers (Graph's per-mailbox limit).
Delta links are the poll's cursor, one per folder: the poll stage stores them (store/cursors.py)
once what they listed is safely queued.

Mailbox actions cost one PATCH (mark read and categories together, held by `If-Match` to the
version whose categories it extends, so the user's changes since are never undone) and one move
per mail. Move targets are resolved once per process and mailbox (a folder another worker
created at the same moment is taken as it is: Graph's 409 `ErrorFolderExists`), and forgotten
when Graph says 404.
A row per message in `GraphState` remembers the version we last saw and the changeKeys our own
PATCH and move produced, so the `updated` notifications our own changes cause are recognised
without asking Graph again (`own_change`). Those rows and the move targets' are kept through
store/graph_notes.py; the source never touches a table itself.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from ...core.config import GraphMailbox
from ...core.contracts import MailboxAction
from ...store.cursors import Cursor
from ...store.graph_notes import GraphNotes
from ...store.stores import Stores
from ..base import ActionResult, NotSupported, Sighting, SourceMessage
from .client import GraphClient, GraphConflict, GraphError, GraphNotFound

log = logging.getLogger(__name__)
MAILBOX_SLOTS = 4  # Graph: at most 4 concurrent requests per mailbox and app
WELL_KNOWN = {
    "inbox",
    "sentitems",
    "archive",
    "deleteditems",
    "junkemail",
    "drafts",
    "outbox",
    "msgfolderroot",
}
MESSAGE_FIELDS = (
    "id,internetMessageId,conversationId,parentFolderId,receivedDateTime,isRead,flag,"
    "categories,subject,changeKey"
)
DELTA_PAGE = 100
PROPERTY_ACTIONS = ("mark_read", "categorize")  # one PATCH carries them all
OWN_KEYS = 16  # changeKeys of our own writes remembered per message (a few per filing)
MAX_KEY = 512  # a changeKey longer than this is not Graph's: not kept
PATCH_ATTEMPTS = 4  # PATCHes of one mail that may meet a 412 before the list is retried later


@dataclass(frozen=True)
class MessageState:
    """What Graph says about a message now (the `$select` of a fetch)."""

    id: str
    folder_id: str
    is_read: bool
    flag_status: str
    flag_start: datetime | None
    flag_due: datetime | None
    categories: tuple[str, ...]
    received: datetime | None
    internet_message_id: str | None
    conversation_id: str | None
    change_key: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MessageState:
        flag = data.get("flag") or {}
        return cls(
            id=str(data["id"]),
            folder_id=str(data.get("parentFolderId") or ""),
            is_read=bool(data.get("isRead")),
            flag_status=str(flag.get("flagStatus") or "notFlagged"),
            flag_start=graph_datetime(flag.get("startDateTime")),
            flag_due=graph_datetime(flag.get("dueDateTime")),
            categories=tuple(data.get("categories") or ()),
            received=_iso(data.get("receivedDateTime")),
            internet_message_id=data.get("internetMessageId"),
            conversation_id=data.get("conversationId"),
            change_key=change_key(data.get("changeKey") or data.get("@odata.etag")),
        )


def change_key(value: Any) -> str | None:
    """The changeKey in a message's `changeKey` or an `@odata.etag` (`W/"<changeKey>"`), the
    form a notification's resourceData carries; None for anything else. Graph's are base64:
    printable ASCII without quotes is asked for, as the key goes back out in `If-Match`."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text or len(text) > MAX_KEY or not (text.isascii() and text.isprintable()):
        return None
    return None if '"' in text else text


def own_change(
    stores: Stores, mailbox: str, source_id: str, etags: Sequence[Any]
) -> dict[str, Any] | None:
    """Our row about `source_id` if every version notifications named (their `@odata.etag`)
    is one our own PATCH or move made: nothing in them is news, no fetch needed. Else None."""
    keys = [change_key(etag) for etag in etags]
    if not keys or any(key is None for key in keys):
        return None
    row = GraphNotes(stores, mailbox).message(source_id)
    if row is None:
        return None
    own = str(row.get("Own") or "").split()
    return row if all(key in own for key in keys) else None


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def graph_datetime(value: Any) -> datetime | None:
    """A `dateTimeTimeZone` ({"dateTime", "timeZone"}) as an aware datetime (UTC if unknown)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    text = str(value["dateTime"])[:26]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        zone = str(value.get("timeZone") or "UTC")
        try:
            from zoneinfo import ZoneInfo

            parsed = parsed.replace(tzinfo=UTC if zone.upper() == "UTC" else ZoneInfo(zone))
        except (KeyError, ValueError):
            parsed = parsed.replace(tzinfo=UTC)  # a Windows zone name: Graph sends UTC by default
    return parsed.astimezone(UTC)


_folder_cache: dict[tuple[str, str, str], dict[str, str]] = {}
_target_cache: dict[tuple[str, str, str], dict[str, str]] = {}  # move targets: path -> id
_folder_lock = threading.Lock()


class GraphSource:
    def __init__(self, mailbox: GraphMailbox, client: GraphClient, stores: Stores) -> None:
        self.mailbox = mailbox
        self.client = client
        self.user = f"users/{quote(mailbox.user, safe='@')}"
        self.slots = stores.slots(f"graph:{mailbox.tenant_id}:{mailbox.user}", MAILBOX_SLOTS)
        self.notes = GraphNotes(stores, mailbox.name)  # its rows: never the table itself
        self._pending_links: dict[str, str] = {}
        self._states: dict[str, MessageState] = {}
        self._noted: set[str] = set()  # messages whose row this source wrote

    # -- folders -----------------------------------------------------------------------------

    def folders(self) -> dict[str, str]:
        """Watched folder name -> Graph folder id (resolved once per process)."""
        key = (self.mailbox.graph_endpoint, self.mailbox.tenant_id, self.mailbox.user)
        with _folder_lock:
            known = _folder_cache.get(key)
        if known is not None and set(known) >= set(self.mailbox.folders):
            return {name: known[name] for name in self.mailbox.folders}
        resolved = {name: self.folder_id(name) for name in self.mailbox.folders}
        with _folder_lock:
            _folder_cache[key] = {**(known or {}), **resolved}
        return resolved

    def folder_id(self, name: str, *, create: bool = False) -> str:
        """A well-known name (inbox, archive, ...) or a path of display names ("Cases/Filed"),
        created level by level when `create` is set (a move target the user named)."""
        if name.lower() in WELL_KNOWN:
            with self.slots.hold():
                return str(self.client.get(f"{self.user}/mailFolders/{name.lower()}")["id"])
        parent = None
        for part in [p for p in name.split("/") if p]:
            children = (
                f"{self.user}/mailFolders/{quote(parent, safe='')}/childFolders"
                if parent
                else f"{self.user}/mailFolders"
            )
            found = self._child(children, part)
            if found is None:
                if not create:
                    raise GraphNotFound(404, "ErrorFolderNotFound", f"no folder {name!r}", "")
                found = self._create_child(children, part)
            parent = found
        if parent is None:
            raise GraphNotFound(404, "ErrorFolderNotFound", f"no folder {name!r}", "")
        return parent

    def _child(self, children: str, part: str) -> str | None:
        escaped = part.replace("'", "''")
        with self.slots.hold():
            found = self.client.get(children, {"$filter": f"displayName eq '{escaped}'"})
        value = found.get("value") if isinstance(found, dict) else None
        if value and isinstance(value[0], dict) and value[0].get("id"):
            return str(value[0]["id"])
        return None

    def _create_child(self, children: str, part: str) -> str:
        """Create one folder level. Another filing may create it at the same moment: Graph
        then answers 409 ErrorFolderExists, which is success (its id is read back)."""
        try:
            with self.slots.hold():
                made = self.client.request("POST", children, json={"displayName": part}).json()
            return str(made["id"])
        except GraphError as exc:
            if exc.status != 409:
                raise
        log.info("graph: mailbox=%s folder %r created by someone else", self.mailbox.name, part)
        found = self._child(children, part)
        if found is not None:
            return found
        # Graph compares names without case when it refuses a duplicate; the filter does not.
        with self.slots.hold():
            for page in self.client.pages(children, {"$top": "100"}):
                for folder in page.get("value", []):
                    if str(folder.get("displayName", "")).casefold() == part.casefold():
                        return str(folder["id"])
        raise GraphError(409, "ErrorFolderExists", f"folder {part!r} exists but was not found")

    def move_target(self, folder: str) -> str:
        """The destinationId of a move: a well-known name as it is, else the folder's id,
        resolved (and created) once per mailbox: kept in the process and in `GraphState`
        (row `folder-<hash of the path>`), so a new worker instance reads it from there."""
        if folder.lower() in WELL_KNOWN:
            return folder.lower()
        key = (self.mailbox.graph_endpoint, self.mailbox.tenant_id, self.mailbox.user)
        with _folder_lock:
            known = _target_cache.get(key, {}).get(folder)
        if known is not None:
            return known
        resolved = self.notes.target(folder)
        if resolved is None:
            resolved = self.folder_id(folder, create=True)
            self.notes.keep_target(folder, resolved, datetime.now(UTC))
        with _folder_lock:
            _target_cache.setdefault(key, {})[folder] = resolved
        return resolved

    def forget_target(self, folder: str) -> None:
        """Graph said 404 for the kept id (the folder was deleted): resolve it afresh."""
        key = (self.mailbox.graph_endpoint, self.mailbox.tenant_id, self.mailbox.user)
        with _folder_lock:
            _target_cache.get(key, {}).pop(folder, None)
        try:
            self.notes.forget_target(folder)
        except Exception as exc:  # already gone, or storage down: resolving overwrites it
            log.info("graph: mailbox=%s could not forget a folder id: %s", self.mailbox.name, exc)

    def folder_name(self, folder_id: str) -> str:
        for name, fid in self.folders().items():
            if fid == folder_id:
                return name
        return folder_id

    # -- MailboxSource -----------------------------------------------------------------------

    def poll(self, cursor: Cursor) -> Sighting:
        """Ids of messages new or changed since each watched folder's delta link in `cursor`,
        with the changeKey delta listed each with, and the delta links to go on from."""
        ids: list[str] = []
        self._pending_links = {}
        for name, fid in self.folders().items():
            stored = (cursor.get(name) or {}).get("DeltaLink")
            link = stored if isinstance(stored, str) and stored else None
            try:
                ids.extend(self._delta(name, fid, link))
            except GraphError as exc:
                if exc.status != 410 and exc.code != "syncStateNotFound":
                    raise
                # The sync state expired: start again; what was filed is recognised as such.
                log.warning(
                    "graph: mailbox=%s folder=%s delta reset: %s", self.mailbox.name, name, exc
                )
                ids.extend(self._delta(name, fid, None))
        listed = list(dict.fromkeys(ids))
        # The version delta listed: a change handed on names it, so our own PATCH or move seen
        # again by delta is recognised without a fetch, as a notification's `@odata.etag` is.
        versions = {
            i: key
            for i in listed
            if (state := self._states.get(i)) is not None and (key := state.change_key)
        }
        return Sighting(
            refs=listed,
            incremental=True,
            cursor={
                name: {"DeltaLink": link} for name, link in self._pending_links.items() if link
            },
            versions=versions,
        )

    def _delta(self, name: str, folder_id: str, link: str | None) -> list[str]:
        headers = {"Prefer": f'IdType="ImmutableId", odata.maxpagesize={DELTA_PAGE}'}
        if link:
            path, params = link, None
        else:
            path = f"{self.user}/mailFolders/{folder_id}/messages/delta"
            params = {"$select": MESSAGE_FIELDS}
            if self.mailbox.first_sync_from:
                since = self.mailbox.first_sync_from.isoformat() + "T00:00:00Z"
                params["$filter"] = f"receivedDateTime ge {since}"
        ids: list[str] = []
        while True:
            with self.slots.hold():
                page = self.client.get(path, params, headers=headers)
            for item in page.get("value", []):
                if "@removed" in item or "id" not in item:
                    continue
                ids.append(str(item["id"]))
                if "parentFolderId" in item:
                    self._states[str(item["id"])] = MessageState.from_json(item)
            next_link = page.get("@odata.nextLink")
            if next_link:
                path, params = next_link, None
                continue
            self._pending_links[name] = str(page.get("@odata.deltaLink") or "")
            return ids

    def close(self) -> None:
        """The HTTP connection pool is the process's, shared by every Graph mailbox."""

    def state(self, source_id: str) -> MessageState:
        with self.slots.hold():
            data = self.client.get(
                f"{self.user}/messages/{quote(source_id, safe='')}", {"$select": MESSAGE_FIELDS}
            )
        state = MessageState.from_json(data)
        self._states[source_id] = state
        self._note(source_id, state)
        return state

    def read(self, source_id: str) -> SourceMessage:
        quoted = quote(source_id, safe="")
        with self.slots.hold():
            state = self._states.get(source_id)
            if state is None:
                data = self.client.get(
                    f"{self.user}/messages/{quoted}", {"$select": MESSAGE_FIELDS}
                )
                state = MessageState.from_json(data)
            raw = self.client.request("GET", f"{self.user}/messages/{quoted}/$value").content
        if source_id not in self._noted:  # state() notes what it read; a delta page did not
            self._note(source_id, state)
        flags = (("\\Seen",) if state.is_read else ()) + (
            ("\\Flagged",) if state.flag_status == "flagged" else ()
        )
        return SourceMessage(
            source_id=source_id,
            raw=raw,
            folder=self.folder_name(state.folder_id),
            flags=flags,
            received_at=state.received,
            conversation_id=state.conversation_id,
        )

    def _note(
        self,
        source_id: str,
        state: MessageState | None = None,
        *,
        seen: dict[str, Any] | None = None,
        own: Sequence[str] = (),
    ) -> None:
        """Remember the version of a message we saw (its changeKey, categories, folder) and
        the changeKeys our own writes made. A lost note costs a fetch later, nothing more, so
        no failure here (storage, or Graph naming the folder) fails the caller."""
        try:
            self._write_note(source_id, state, seen, own)
        except Exception as exc:
            log.warning("graph: mailbox=%s could not note a message: %s", self.mailbox.name, exc)

    def _write_note(
        self,
        source_id: str,
        state: MessageState | None,
        seen: dict[str, Any] | None,
        own: Sequence[str],
    ) -> None:
        row: dict[str, Any] = {}
        if state is not None:
            row |= {
                "Seen": state.change_key or "",
                "Categories": json.dumps(list(state.categories), ensure_ascii=False)[:30000],
                "FolderId": state.folder_id,
            }
        if seen is not None:
            key = change_key(seen.get("changeKey") or seen.get("@odata.etag"))
            row["Seen"] = key or ""
            if isinstance(seen.get("categories"), list):
                row["Categories"] = json.dumps(seen["categories"], ensure_ascii=False)[:30000]
            if seen.get("parentFolderId"):
                row["FolderId"] = str(seen["parentFolderId"])
                # The folder as the fetch stage records it, for an echo that is not fetched.
                row["Folder"] = self.folder_name(str(seen["parentFolderId"]))
        self.notes.note_message(source_id, row, own, datetime.now(UTC), keep_own=OWN_KEYS)
        self._noted.add(source_id)

    def send_mime(self, raw: bytes) -> str:
        """sendMail in its MIME form (a copy is saved to Sent Items). Needs Mail.Send."""
        import base64

        with self.slots.hold():
            self.client.request(
                "POST",
                f"{self.user}/sendMail",
                content=base64.b64encode(raw),
                headers={"Content-Type": "text/plain"},
            )
        return "accepted by Graph sendMail"

    def append(self, folder: str, raw: bytes) -> None:  # noqa: ARG002
        raise NotSupported(f"graph {self.mailbox.name}: sendMail keeps its own copy in Sent")

    def apply(self, source_id: str, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        """Mark read and categorise (one PATCH), move, delete. Without Mail.ReadWrite Graph
        answers 403: the result says so and filing stands (read-only permissions still file
        mail). Throttling raises `GraphThrottled` (a `SourceBusy` with Graph's Retry-After), a
        connection failure or a 5xx `GraphUnavailable`, a message that kept changing under our
        PATCH `GraphConflict` (both `SourceUnavailable`): the caller retries the whole list,
        which is safe (the PATCH sets values, a move to the folder the mail is in changes
        nothing)."""
        for action in actions:
            if action.action not in (*PROPERTY_ACTIONS, "move", "delete"):
                raise ValueError(f"unknown mailbox action {action.action}")
        path = f"{self.user}/messages/{quote(source_id, safe='')}"
        results: dict[int, ActionResult] = {}
        own: list[str] = []
        seen: dict[str, Any] | None = None
        try:
            props = [(i, a) for i, a in enumerate(actions) if a.action in PROPERTY_ACTIONS]
            if props:
                outcome = self._guard(lambda: self._patch(source_id, path, props, own))
                if isinstance(outcome, str):
                    results |= {i: ActionResult(a, False, outcome) for i, a in props}
                else:
                    seen = outcome[1] or seen
                    results |= {i: ActionResult(a, True, outcome[0][i]) for i, a in props}
            for i, action in enumerate(actions):
                if action.action in PROPERTY_ACTIONS:
                    continue
                one = self._guard(partial(self._move_or_delete, path, action, own))
                if isinstance(one, str):
                    results[i] = ActionResult(action, False, one)
                else:
                    results[i] = ActionResult(action, True, one[0])
                    seen = one[1] or seen
        finally:
            if own:
                self._note(source_id, seen=seen, own=own)
        return [results[i] for i in range(len(actions))]

    @staticmethod
    def _guard(work: Any) -> Any:
        """`work()`'s result, or why it was not done (a reason string) when Graph says the
        mail is gone (404) or the app may not write (403). Everything else propagates."""
        try:
            return work()
        except GraphNotFound:
            return "the message is gone from the mailbox"
        except GraphError as exc:
            if exc.status != 403:
                raise
            return f"not allowed (needs Mail.ReadWrite): {exc.code}"

    def _patch(
        self,
        source_id: str,
        path: str,
        props: list[tuple[int, MailboxAction]],
        own: list[str],
    ) -> tuple[dict[int, str], dict[str, Any] | None]:
        """One PATCH for every property action. Categories are added to those of the version
        we last read (kept in our row; a GET only when we never read it), and the PATCH holds
        only if the message is still that version (`If-Match`), so a category the user added
        or removed since is never undone by our write of the whole list.

        Graph's message-update page lists no If-Match, but Outlook items carry `@odata.etag`
        (W/"<changeKey>") and an update whose change key is not the item's current one fails
        with 412 `ErrorIrresolvableConflict` ("...the change key passed in the request does not
        match the current change key for the item."). The same 412 also comes, now and then,
        for a PATCH that sent no condition (msgraph-sdk-dotnet#1201, davmail#491). Either way:
        read the message's categories and etag again, merge ours in, PATCH again; after
        PATCH_ATTEMPTS conflicts `GraphConflict` hands the whole list back to be retried later.
        """
        named = (a.category for _, a in props if a.action == "categorize")
        wanted = list(dict.fromkeys(c for c in named if c))
        mark_read = any(a.action == "mark_read" for _, a in props)
        version: tuple[list[str], str | None] | None = None
        if wanted:
            version = self._known_version(source_id)
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            if wanted and version is None:
                version = self._current_version(path)
            current = version[0] if version else []
            missing = [c for c in wanted if c not in current]
            details = _patch_details(props, missing)
            body: dict[str, Any] = {"isRead": True} if mark_read else {}
            headers: dict[str, str] = {}
            if missing:
                body["categories"] = [*current, *missing]
                if version and version[1]:
                    headers["If-Match"] = f'W/"{version[1]}"'
            if not body:
                return details, None
            try:
                with self.slots.hold():
                    response = self.client.request("PATCH", path, json=body, headers=headers)
            except GraphError as exc:
                if exc.status != 412:
                    raise
                log.info(
                    "graph: mailbox=%s PATCH conflict %d/%d (%s): reading the message again",
                    self.mailbox.name,
                    attempt,
                    PATCH_ATTEMPTS,
                    exc.code,
                )
                version = None
                continue
            answer = _entity(response)
            key = change_key(answer.get("changeKey") or answer.get("@odata.etag"))
            if key:
                own.append(key)
            return details, answer or None
        raise GraphConflict(
            412,
            "ErrorIrresolvableConflict",
            f"the message changed under each of {PATCH_ATTEMPTS} PATCHes; retried later",
            f"PATCH /{path}",
        )

    def _known_version(self, source_id: str) -> tuple[list[str], str] | None:
        """The categories and changeKey of the version our row notes, if it notes both."""
        row = self.notes.message(source_id)
        if row is None or not isinstance(row.get("Categories"), str):
            return None
        key = change_key(row.get("Seen"))
        try:
            known = json.loads(row["Categories"])
        except ValueError:
            return None
        if key is None or not isinstance(known, list):
            return None
        if not all(isinstance(c, str) for c in known):
            return None
        return known, key

    def _current_version(self, path: str) -> tuple[list[str], str | None]:
        """The message's categories now, and the changeKey of that version (its etag)."""
        with self.slots.hold():
            data = self.client.get(path, {"$select": "categories,changeKey"})
        key = change_key(data.get("changeKey") or data.get("@odata.etag"))
        if key is None:  # no version to hold the PATCH to: it goes unconditional, as before
            log.warning("graph: mailbox=%s message without a usable etag", self.mailbox.name)
        return [str(c) for c in data.get("categories") or []], key

    def _move_or_delete(
        self, path: str, action: MailboxAction, own: list[str]
    ) -> tuple[str, dict[str, Any] | None]:
        if action.action == "delete":
            # Graph moves a deleted message to Deleted Items (recoverable), as Outlook does.
            with self.slots.hold():
                self.client.request("DELETE", path)
            return "deleted (to Deleted Items)", None
        folder = action.folder or "archive"
        target = self.move_target(folder)
        try:
            with self.slots.hold():
                answer = _entity(
                    self.client.request("POST", f"{path}/move", json={"destinationId": target})
                )
        except GraphNotFound:
            if target == folder.lower():
                raise  # a well-known folder always exists: the message is gone
            # The cached folder may be gone (deleted by a user): resolve it again, once.
            self.forget_target(folder)
            target = self.move_target(folder)
            with self.slots.hold():
                answer = _entity(
                    self.client.request("POST", f"{path}/move", json={"destinationId": target})
                )
        key = change_key(answer.get("changeKey") or answer.get("@odata.etag"))
        if key:
            own.append(key)
        return f"moved to {folder}", answer or None


def _patch_details(props: list[tuple[int, MailboxAction]], missing: list[str]) -> dict[int, str]:
    details: dict[int, str] = {}
    for i, a in props:
        if a.action == "mark_read":
            details[i] = "marked read"
        elif not a.category:
            details[i] = "no category named"
        elif a.category in missing:
            details[i] = f"category {a.category} added"
        else:
            details[i] = f"already in category {a.category}"
    return details


def _entity(response: Any) -> dict[str, Any]:
    """The JSON object an answer carries; {} for an empty or unexpected body (the action
    was done all the same: only its changeKey is not known)."""
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
