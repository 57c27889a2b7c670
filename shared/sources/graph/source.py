"""A Graph mailbox as a `MailboxSource`: delta queries list what is new, a fetch reads one
message (its state and its MIME), and mailbox actions are Graph PATCH / move / DELETE calls.

Ids are immutable ids (`Prefer: IdType="ImmutableId"`), so a source id survives moves. Every
call for one mailbox holds one of four slots shared by all workers (Graph's per-mailbox limit).
Delta links are stored per folder once what they listed is safely queued (`commit`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ...core.config import GraphMailbox
from ...core.contracts import MailboxAction
from ...store.stores import GRAPH_STATE, Stores
from ..base import ActionResult, SourceMessage
from .client import GraphClient, GraphError, GraphNotFound

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
    "categories,subject"
)
DELTA_PAGE = 100


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
        )


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
_folder_lock = threading.Lock()


class GraphSource:
    incremental = True  # refs() lists what changed since the last delta link

    def __init__(self, mailbox: GraphMailbox, client: GraphClient, stores: Stores) -> None:
        self.mailbox = mailbox
        self.client = client
        self.stores = stores
        self.user = f"users/{quote(mailbox.user, safe='@')}"
        self.slots = stores.slots(f"graph:{mailbox.tenant_id}:{mailbox.user}", MAILBOX_SLOTS)
        self._pending_links: dict[str, str] = {}
        self._states: dict[str, MessageState] = {}

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
            escaped = part.replace("'", "''")
            with self.slots.hold():
                found = self.client.get(children, {"$filter": f"displayName eq '{escaped}'"})
                if found.get("value"):
                    parent = str(found["value"][0]["id"])
                    continue
                if not create:
                    raise GraphNotFound(404, "ErrorFolderNotFound", f"no folder {name!r}", "")
                made = self.client.request("POST", children, json={"displayName": part}).json()
            parent = str(made["id"])
        if parent is None:
            raise GraphNotFound(404, "ErrorFolderNotFound", f"no folder {name!r}", "")
        return parent

    def folder_name(self, folder_id: str) -> str:
        for name, fid in self.folders().items():
            if fid == folder_id:
                return name
        return folder_id

    # -- MailboxSource -----------------------------------------------------------------------

    def refs(self) -> Sequence[str]:
        """Ids of messages new or changed since the stored delta link of each watched folder."""
        ids: list[str] = []
        table = self.stores.table(GRAPH_STATE)
        for name, fid in self.folders().items():
            row = table.get(self.mailbox.name, f"delta-{name}")
            link = row.get("DeltaLink") if row else None
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
        return list(dict.fromkeys(ids))

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

    def commit(self, now: datetime) -> None:
        """Store the delta links `refs` reached: everything they listed is queued."""
        table = self.stores.table(GRAPH_STATE)
        for name, link in self._pending_links.items():
            if link:
                table.upsert(
                    {
                        "PartitionKey": self.mailbox.name,
                        "RowKey": f"delta-{name}",
                        "DeltaLink": link,
                        "At": now,
                    }
                )
        self._pending_links.clear()

    def close(self) -> None:
        """The HTTP connection pool is the process's, shared by every Graph mailbox."""

    def state(self, source_id: str) -> MessageState:
        with self.slots.hold():
            data = self.client.get(
                f"{self.user}/messages/{quote(source_id, safe='')}", {"$select": MESSAGE_FIELDS}
            )
        state = MessageState.from_json(data)
        self._states[source_id] = state
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

    def apply(self, source_id: str, actions: Sequence[MailboxAction]) -> list[ActionResult]:
        """Mark read, categorise, move, delete. Without Mail.ReadWrite Graph answers 403: the
        result says so and filing stands (read-only permissions still file mail)."""
        results = []
        path = f"{self.user}/messages/{quote(source_id, safe='')}"
        for action in actions:
            try:
                detail = self._apply_one(path, action)
            except GraphNotFound:
                results.append(ActionResult(action, False, "the message is gone from the mailbox"))
                continue
            except GraphError as exc:
                if exc.status != 403:
                    raise
                results.append(
                    ActionResult(action, False, f"not allowed (needs Mail.ReadWrite): {exc.code}")
                )
                continue
            results.append(ActionResult(action, True, detail))
        return results

    def _apply_one(self, path: str, action: MailboxAction) -> str:
        if action.action == "mark_read":
            with self.slots.hold():
                self.client.request("PATCH", path, json={"isRead": True})
            return "marked read"
        if action.action == "categorize":
            with self.slots.hold():
                current = self.client.get(path, {"$select": "categories"}).get("categories") or []
                if action.category in current:
                    return f"already in category {action.category}"
                self.client.request("PATCH", path, json={"categories": [*current, action.category]})
            return f"category {action.category} added"
        if action.action == "move":
            folder = action.folder or "archive"
            target = (
                folder.lower()
                if folder.lower() in WELL_KNOWN
                else self.folder_id(folder, create=True)
            )
            with self.slots.hold():
                self.client.request("POST", f"{path}/move", json={"destinationId": target})
            return f"moved to {folder}"
        if action.action == "delete":
            # Graph moves a deleted message to Deleted Items (recoverable), as Outlook does.
            with self.slots.hold():
                self.client.request("DELETE", path)
            return "deleted (to Deleted Items)"
        raise ValueError(f"unknown mailbox action {action.action}")
