"""The EWS operations the fake answers.

Each handler follows its page in the EWS reference (learn.microsoft.com/exchange/client-developer/
web-service-reference): "GetFolder operation", "FindFolder operation" (``RootFolder`` with
``IndexedPagingOffset``/``TotalItemsInView``/``IncludesLastItemInRange``), "CreateFolder
operation", "SyncFolderItems operation" (``SyncState``, ``IncludesLastItemInRange``, ``Changes``
of ``Create``/``Update``/``Delete``/``ReadFlagChange``), "GetItem operation", "FindItem operation",
"UpdateItem operation" (``SetItemField``/``AppendToItemField``/``DeleteItemField``,
``ConflictResults``), "MoveItem operation" (new ``ItemId`` unless ``ReturnNewItemIds="false"``),
"DeleteItem operation", "ResolveNames operation", "ConvertId operation" (which clients use
to probe the version) and "CreateItem operation (email message)" (see :mod:`tests.fakes.ews_send`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tests.fakes.ews_items import FOLDER_TAGS, folder_xml, item_xml, mailbox_elem
from tests.fakes.ews_send import (
    DISPOSITIONS,
    SentMail,
    compose,
    mime_content,
    mime_recipients,
    property_recipients,
)
from tests.fakes.ews_store import (
    FLAG_KEYS,
    EwsStore,
    ExtValue,
    Flag,
    Folder,
    Item,
    Mailbox,
)
from tests.fakes.ews_xml import (
    MNS,
    TNS,
    EwsError,
    SoapFault,
    bool_text,
    child,
    el,
    error_message,
    id_elems,
    local,
    parse_bool,
    parse_datetime,
    parse_shape,
    prop_key,
    response_message,
    sub,
    text_of,
)

T = TypeVar("T")


@dataclass
class Caller:
    """Who a request runs as: the authenticated user (None for a bearer token), the mailbox it
    acts as (impersonated, else the user's own, else for an app token X-AnchorMailbox or the
    first mailbox it names), and the mailboxes it touched."""

    user: str | None
    principal: str | None
    impersonated: str | None = None
    acted_for: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SyncCall:
    """One SyncFolderItems answer: the state it was asked from, the state it issued, how many
    changes it carried and whether it reached the end."""

    folder: str
    state_in: str | None
    state_out: str
    changes: int
    includes_last: bool


class Operations:
    """Handlers: ``handle(op, body, caller)`` returns the response messages of one request."""

    def __init__(self, store: EwsStore) -> None:
        self.store = store
        self.sync_calls: list[SyncCall] = []
        self.get_item_counts: list[int] = []
        self.sent: list[SentMail] = []
        self.handlers: dict[str, Callable[[ET.Element, Caller], list[ET.Element]]] = {
            "GetFolder": self.get_folder,
            "FindFolder": self.find_folder,
            "CreateFolder": self.create_folder,
            "SyncFolderItems": self.sync_folder_items,
            "GetItem": self.get_item,
            "FindItem": self.find_item,
            "UpdateItem": self.update_item,
            "MoveItem": self.move_item,
            "DeleteItem": self.delete_item,
            "CreateItem": self.create_item,
            "ResolveNames": self.resolve_names,
            "ConvertId": self.convert_id,
        }

    # --- access -----------------------------------------------------------------------------------

    def _access(self, caller: Caller, box: Mailbox) -> None:
        """Own mailbox, impersonated mailbox, or one the user was granted full access to."""
        if caller.principal is None:  # app token without impersonation: anchor decides
            caller.principal = box.address
        elif box.address.lower() != caller.principal.lower() and (
            caller.principal.lower() not in box.delegates
        ):
            raise EwsError("ErrorAccessDenied")
        if box.address not in caller.acted_for:
            caller.acted_for.append(box.address)

    def folder(self, elem: ET.Element, caller: Caller) -> Folder:
        if local(elem.tag) == "DistinguishedFolderId":
            address = text_of(child(elem, TNS, "Mailbox"), TNS, "EmailAddress") or caller.principal
            if not address:
                raise EwsError("ErrorMissingEmailAddress", "The mailbox is not specified.")
            box = self.store.mailbox(address)
            self._access(caller, box)
            return self.store.distinguished(box, elem.get("Id", ""))
        if local(elem.tag) == "FolderId":
            found = self.store.folder_by_id(elem.get("Id", ""))
            self._access(caller, self.store.mailbox(found.mailbox))
            return found
        raise EwsError("ErrorInvalidIdMalformed")

    def item(self, elem: ET.Element, caller: Caller) -> Item:
        found = self.store.item_by_id(elem.get("Id", ""))
        self._access(caller, self.store.mailbox(found.mailbox))
        return found

    def _each_folder(
        self,
        op: str,
        refs: ET.Element | None,
        caller: Caller,
        answer: Callable[[Folder], ET.Element],
    ) -> list[ET.Element]:
        """A response message per folder id in ``refs``: ``answer(folder)``, or the error."""
        out = []
        for ref in id_elems(refs):
            try:
                folder = self.folder(ref, caller)
            except EwsError as e:
                out.append(error_message(op, e.code, e.text))
                continue
            out.append(answer(folder))
        return out

    def get_folder(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        shape = parse_shape(child(body, MNS, "FolderShape"))

        def answer(folder: Folder) -> ET.Element:
            folders = el("m:Folders")
            folders.append(folder_xml(self.store, folder, shape))
            return response_message("GetFolder", folders)

        return self._each_folder("GetFolder", child(body, MNS, "FolderIds"), caller, answer)

    def find_folder(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        shape = parse_shape(child(body, MNS, "FolderShape"))
        traversal = body.get("Traversal", "Shallow")
        view = child(body, MNS, "IndexedPageFolderView")
        restriction = child(body, MNS, "Restriction")

        def answer(parent: Folder) -> ET.Element:
            if traversal == "Deep":
                found = self.store.descendants(parent)
            elif traversal == "Shallow":
                found = self.store.children(parent)
            else:  # SoftDeleted: the fake keeps no deleted folders
                found = []
            if restriction is not None:
                found = [f for f in found if _matches(restriction, _folder_value(f))]
            root, page = _root_folder(found, view)
            folders = sub(root, "t:Folders")
            folders.extend(folder_xml(self.store, f, shape) for f in page)
            return response_message("FindFolder", root)

        return self._each_folder("FindFolder", child(body, MNS, "ParentFolderIds"), caller, answer)

    def create_folder(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        parent_ref = next(id_elems(child(body, MNS, "ParentFolderId")), None)
        if parent_ref is None:
            raise SoapFault("ErrorSchemaValidation")
        out = []
        for spec in id_elems(child(body, MNS, "Folders")):
            try:
                parent = self.folder(parent_ref, caller)
                name = text_of(spec, TNS, "DisplayName")
                if not name:
                    raise EwsError("ErrorInvalidOperation", "A folder needs a DisplayName.")
                folder_class = text_of(spec, TNS, "FolderClass") or {
                    "CalendarFolder": "IPF.Appointment",
                    "ContactsFolder": "IPF.Contact",
                    "TasksFolder": "IPF.Task",
                }.get(local(spec.tag), "IPF.Note")
                box = self.store.mailbox(parent.mailbox)
                folder = self.store.add_folder(box, name, parent, folder_class)
            except EwsError as e:
                out.append(error_message("CreateFolder", e.code, e.text))
                continue
            folders = el("m:Folders")
            created = sub(folders, FOLDER_TAGS.get(folder_class, "t:Folder"))
            sub(created, "t:FolderId", Id=folder.id, ChangeKey=folder.changekey)
            out.append(response_message("CreateFolder", folders))
        return out

    # --- items ------------------------------------------------------------------------------------

    def sync_folder_items(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        shape = parse_shape(child(body, MNS, "ItemShape"))
        ref = next(id_elems(child(body, MNS, "SyncFolderId")), None)
        state_in = text_of(body, MNS, "SyncState") or None
        try:
            max_changes = int(text_of(body, MNS, "MaxChangesReturned") or "")
        except ValueError:
            raise SoapFault("ErrorSchemaValidation") from None
        if ref is None or not 1 <= max_changes <= 512:
            raise SoapFault("ErrorSchemaValidation")
        ignore = {e.get("Id", "") for e in id_elems(child(body, MNS, "Ignore"))}
        try:
            folder = self.folder(ref, caller)
            with self.store.lock:
                position = self.store.sync_position(folder, state_in)
                page = self.store.sync(folder, position, max_changes, ignore)
                state_out = self.store.sync_state(folder, page.position)
                changes = el("m:Changes")
                for op, what in page.changes:
                    if isinstance(what, str):
                        sub(sub(changes, "t:Delete"), "t:ItemId", Id=what)
                    elif op == "R":
                        change = sub(changes, "t:ReadFlagChange")
                        sub(change, "t:ItemId", Id=what.id, ChangeKey=what.changekey)
                        sub(change, "t:IsRead", bool_text(what.is_read))
                    else:
                        wrapper = sub(changes, "t:Create" if op == "C" else "t:Update")
                        wrapper.append(item_xml(self.store, what, shape))
        except EwsError as e:
            # The reference's error example still carries an empty SyncState and
            # IncludesLastItemInRange (and clients read them before the ResponseCode).
            tail = [el("m:SyncState"), el("m:IncludesLastItemInRange", "true")]
            return [error_message("SyncFolderItems", e.code, e.text, tail)]
        self.sync_calls.append(
            SyncCall(folder.id, state_in, state_out, len(page.changes), page.includes_last)
        )
        return [
            response_message(
                "SyncFolderItems",
                el("m:SyncState", state_out),
                el("m:IncludesLastItemInRange", bool_text(page.includes_last)),
                changes,
            )
        ]

    def get_item(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        shape = parse_shape(child(body, MNS, "ItemShape"))
        out = []
        returned = 0
        for ref in id_elems(child(body, MNS, "ItemIds")):
            try:
                with self.store.lock:
                    items = el("m:Items")
                    items.append(item_xml(self.store, self.item(ref, caller), shape))
            except EwsError as e:
                out.append(error_message("GetItem", e.code, e.text))
                continue
            returned += 1
            out.append(response_message("GetItem", items))
        self.get_item_counts.append(returned)
        return out

    def find_item(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        """Shallow FindItem without restrictions, newest first, with ``IndexedPageItemView``."""
        shape = parse_shape(child(body, MNS, "ItemShape"))
        if any(child(body, MNS, name) is not None for name in ("Restriction", "QueryString")):
            raise SoapFault("ErrorInvalidOperation", "The fake's FindItem does not filter.")
        view = child(body, MNS, "IndexedPageItemView")

        def answer(folder: Folder) -> ET.Element:
            with self.store.lock:
                found = sorted(folder.items.values(), key=lambda i: i.received, reverse=True)
                root, page = _root_folder(found, view)
                sub(root, "t:Items").extend(item_xml(self.store, i, shape) for i in page)
            return response_message("FindItem", root)

        return self._each_folder("FindItem", child(body, MNS, "ParentFolderIds"), caller, answer)

    def update_item(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        never_overwrite = body.get("ConflictResolution") == "NeverOverwrite"
        out = []
        for change in id_elems(child(body, MNS, "ItemChanges")):
            ref = child(change, TNS, "ItemId")
            try:
                if ref is None:
                    raise EwsError("ErrorInvalidIdMalformed")
                with self.store.lock:
                    target = self.item(ref, caller)
                    stale = ref.get("ChangeKey") not in (None, target.changekey)
                    if never_overwrite and stale:
                        raise EwsError("ErrorIrresolvableConflict")
                    only_read = self._apply(target, child(change, TNS, "Updates"))
                    self.store.touch(target, "R" if only_read else "U")
                    items = el("m:Items")
                    done = sub(items, f"t:{target.kind}")
                    sub(done, "t:ItemId", Id=target.id, ChangeKey=target.changekey)
            except EwsError as e:
                out.append(error_message("UpdateItem", e.code, e.text))
                continue
            conflicts = el("m:ConflictResults")
            sub(conflicts, "t:Count", "0")
            out.append(response_message("UpdateItem", items, conflicts))
        return out

    def _apply(self, item: Item, updates: ET.Element | None) -> bool:
        """Apply Set/Append/DeleteItemField; True if only IsRead changed (a ReadFlagChange).
        Properties the fake does not model are accepted and dropped."""
        only_read = True
        for update in id_elems(updates):
            kind = local(update.tag)
            path = next(iter(update), None)
            if path is None:
                raise EwsError("ErrorInvalidPropertySet", "Set action is invalid for property.")
            holder = next((c for c in update if c is not path), None)
            value = None if holder is None else next(iter(holder), None)
            if local(path.tag) == "ExtendedFieldURI":
                only_read = False
                self._set_extended(item, path, value if kind != "DeleteItemField" else None)
                continue
            uri = path.get("FieldURI", "")
            only_read = only_read and uri == "message:IsRead"
            self._set_field(item, uri, kind, value)
        return only_read

    def _set_extended(self, item: Item, path: ET.Element, value: ET.Element | None) -> None:
        key = prop_key(path)
        text = None
        values: tuple[str, ...] | None = None
        if value is not None:
            many = child(value, TNS, "Values")
            if many is not None:
                values = tuple(v.text or "" for v in many)
            else:
                text = text_of(value, TNS, "Value")
        if key in FLAG_KEYS:
            self.store.set_flag_property(item, key, text)
        elif value is None:
            item.extended.pop(key, None)
        else:
            stored = values if values is not None else text or ""
            item.extended[key] = ExtValue(path.get("PropertyType", "String"), stored)

    @staticmethod
    def _set_field(item: Item, uri: str, kind: str, value: ET.Element | None) -> None:
        delete = kind == "DeleteItemField" or value is None
        if uri == "message:IsRead":
            item.is_read = not delete and parse_bool(value.text if value is not None else None)
        elif uri == "item:Categories":
            names = [] if delete or value is None else [s.text or "" for s in value]
            item.categories = item.categories + names if kind == "AppendToItemField" else names
        elif uri == "item:Subject":
            item.subject = "" if delete or value is None else value.text or ""
        elif uri == "item:Flag":
            flag = Flag()
            if not delete and value is not None:
                status = text_of(value, TNS, "FlagStatus") or "NotFlagged"
                flag.status = (
                    "Complete"
                    if status == "Complete"
                    else ("Flagged" if status == "Flagged" else "NotFlagged")
                )
                dates = ("StartDate", "DueDate", "CompleteDate")
                moments = {
                    local(c.tag): parse_datetime(c.text or "")
                    for c in value
                    if local(c.tag) in dates and c.text
                }
                flag.start = moments.get("StartDate")
                flag.due = moments.get("DueDate")
                flag.complete = moments.get("CompleteDate")
            item.flag = flag
        elif uri in ("calendar:Start", "calendar:End") and not delete and value is not None:
            moment = parse_datetime(value.text or "")
            if uri == "calendar:Start":
                item.start = moment
            else:
                item.end = moment

    def move_item(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        target_ref = next(id_elems(child(body, MNS, "ToFolderId")), None)
        if target_ref is None:
            raise SoapFault("ErrorSchemaValidation")
        return_ids = body.get("ReturnNewItemIds", "true").lower() != "false"
        out = []
        for ref in id_elems(child(body, MNS, "ItemIds")):
            try:
                with self.store.lock:
                    try:
                        target = self.folder(target_ref, caller)
                    except EwsError as e:  # MoveItem names its own code ("MoveItem")
                        if e.code != "ErrorFolderNotFound":
                            raise
                        raise EwsError("ErrorToFolderNotFound") from None
                    moved = self.store.move(self.item(ref, caller), target)
                    items = el("m:Items")
                    if return_ids:
                        done = sub(items, f"t:{moved.kind}")
                        sub(done, "t:ItemId", Id=moved.id, ChangeKey=moved.changekey)
            except EwsError as e:
                out.append(error_message("MoveItem", e.code, e.text))
                continue
            out.append(response_message("MoveItem", items))
        return out

    def delete_item(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        """HardDelete and SoftDelete remove the item; MoveToDeletedItems moves it to
        deleteditems (a soft delete when it is already there)."""
        delete_type = body.get("DeleteType", "HardDelete")
        out = []
        for ref in id_elems(child(body, MNS, "ItemIds")):
            try:
                with self.store.lock:
                    item = self.item(ref, caller)
                    box = self.store.mailbox(item.mailbox)
                    trash = self.store.distinguished(box, "deleteditems")
                    if delete_type == "MoveToDeletedItems" and item.folder_id != trash.id:
                        self.store.move(item, trash)
                    else:
                        self.store.delete(item)
            except EwsError as e:
                out.append(error_message("DeleteItem", e.code, e.text))
                continue
            out.append(response_message("DeleteItem"))
        return out

    def create_item(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        """Email messages only: one response message per item; an empty ``m:Items`` when the
        message was sent, the new ``ItemId`` for SaveOnly; errors carry an empty ``m:Items`` too,
        as the reference's error example does."""
        disposition = body.get("MessageDisposition")
        if disposition is not None and disposition not in DISPOSITIONS:
            raise SoapFault("ErrorSchemaValidation")
        saved_ref = next(id_elems(child(body, MNS, "SavedItemFolderId")), None)
        items = child(body, MNS, "Items")
        if items is None or len(items) == 0:
            raise SoapFault("ErrorSchemaValidation")
        out = []
        for spec in items:
            try:
                with self.store.lock:
                    saved = self._create_message(spec, disposition, saved_ref, caller)
                    created = el("m:Items")
                    if saved is not None:
                        done = sub(created, f"t:{saved.kind}")
                        sub(done, "t:ItemId", Id=saved.id, ChangeKey=saved.changekey)
            except EwsError as e:
                out.append(error_message("CreateItem", e.code, e.text, [el("m:Items")]))
                continue
            out.append(response_message("CreateItem", created))
        return out

    def _create_message(
        self,
        spec: ET.Element,
        disposition: str | None,
        saved_ref: ET.Element | None,
        caller: Caller,
    ) -> Item | None:
        """Send and/or save one ``t:Message``; the saved item for SaveOnly, else None."""
        if local(spec.tag) != "Message":
            raise EwsError("ErrorInvalidOperation", "The fake's CreateItem creates messages only.")
        if disposition is None:
            raise EwsError("ErrorMessageDispositionRequired")
        if saved_ref is not None:
            target = self.folder(saved_ref, caller)
            box = self.store.mailbox(target.mailbox)
        else:
            if not caller.principal:
                raise EwsError("ErrorMissingEmailAddress", "The mailbox is not specified.")
            box = self.store.mailbox(caller.principal)
            self._access(caller, box)
            default = "drafts" if disposition == "SaveOnly" else "sentitems"
            target = self.store.distinguished(box, default)
        mime = mime_content(spec)
        if mime is None:
            recipients = property_recipients(spec)
            mime = compose(spec, (box.display_name, box.address))
        else:
            recipients = mime_recipients(mime)
        if disposition != "SaveOnly" and not recipients:
            raise EwsError("ErrorInvalidRecipients")
        if disposition == "SaveOnly":
            is_read = parse_bool(text_of(spec, TNS, "IsRead"))
            return self.store.add_message(target, mime, None, is_read)
        if disposition == "SendAndSaveCopy":
            self.store.add_message(target, mime, None, True)
        self.sent.append(SentMail(box.address, mime, disposition, recipients))
        return None

    # --- directory and ids ------------------------------------------------------------------------

    def resolve_names(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        """Ambiguous name resolution against the fake's users: exact address, else prefix of the
        address or display name. Several candidates answer ErrorNameResolutionMultipleResults
        (a Warning with the candidates), none ErrorNameResolutionNoResults."""
        entry = (text_of(body, MNS, "UnresolvedEntry") or "").strip().lower()
        entry = entry.removeprefix("smtp:")
        with self.store.lock:
            boxes = list(self.store.mailboxes.values())
        exact = [b for b in boxes if b.address.lower() == entry]
        found = exact or [
            b
            for b in boxes
            if b.address.lower().startswith(entry) or b.display_name.lower().startswith(entry)
        ]
        if not found:
            return [error_message("ResolveNames", "ErrorNameResolutionNoResults")]
        resolution = el(
            "m:ResolutionSet",
            TotalItemsInView=str(len(found)),
            IncludesLastItemInRange="true",
        )
        for box in found:
            mailbox_elem(sub(resolution, "t:Resolution"), box.display_name, box.address, "Mailbox")
        if len(found) == 1:
            return [response_message("ResolveNames", resolution)]
        code = "ErrorNameResolutionMultipleResults"
        msg = error_message("ResolveNames", code, extra=[resolution])
        msg.set("ResponseClass", "Warning")
        return [msg]

    def convert_id(self, body: ET.Element, caller: Caller) -> list[ET.Element]:
        """Ids convert to themselves (EwsId <-> EwsId); anything else is malformed, which is what
        a client's ``DUMMY`` version probe gets from Exchange too."""
        destination = body.get("DestinationFormat", "EwsId")
        out = []
        for alt in id_elems(child(body, MNS, "SourceIds")):
            try:
                if alt.get("Format") != "EwsId" or destination != "EwsId":
                    raise EwsError("ErrorInvalidIdMalformed")
                self.store.item_by_id(alt.get("Id", ""))
            except EwsError as e:
                out.append(error_message("ConvertId", e.code, e.text))
                continue
            converted = el(
                "t:AlternateId",
                Format=destination,
                Id=alt.get("Id", ""),
                Mailbox=alt.get("Mailbox", ""),
            )
            out.append(response_message("ConvertId", converted))
        return out


def _page(found: list[T], view: ET.Element | None) -> tuple[list[T], int, bool]:
    """Apply an ``IndexedPage...View``: the page, the next offset and whether it is the last."""
    if view is None:
        return found, len(found), True
    offset = int(view.get("Offset", "0"))
    size = int(view.get("MaxEntriesReturned", str(len(found) or 1)))
    if view.get("BasePoint", "Beginning") == "End":
        start = max(0, len(found) - offset - size)
        page = found[start : len(found) - offset]
    else:
        page = found[offset : offset + size]
    end = offset + len(page)
    return page, end, end >= len(found)


def _root_folder(found: list[T], view: ET.Element | None) -> tuple[ET.Element, list[T]]:
    """``m:RootFolder`` with the paging attributes of ``view`` over ``found``, and the page."""
    page, offset, last = _page(found, view)
    root = el(
        "m:RootFolder",
        IndexedPagingOffset=str(offset),
        TotalItemsInView=str(len(found)),
        IncludesLastItemInRange=bool_text(last),
    )
    return root, page


def _folder_value(folder: Folder) -> Callable[[str], str | None]:
    values = {"folder:DisplayName": folder.name, "folder:FolderClass": folder.folder_class}
    return values.get


def _matches(restriction: ET.Element, value_of: Callable[[str], str | None]) -> bool:
    """Evaluate the restriction subset FindFolder clients send: IsEqualTo / IsNotEqualTo /
    Contains on a FieldURI against a Constant, combined with And / Or / Not."""

    def evaluate(node: ET.Element) -> bool:
        name = local(node.tag)
        if name in ("Restriction", "Not"):
            result = all(evaluate(c) for c in node)
            return not result if name == "Not" else result
        if name == "And":
            return all(evaluate(c) for c in node)
        if name == "Or":
            return any(evaluate(c) for c in node)
        uri = child(node, TNS, "FieldURI")
        constant = node.find(f".//{{{TNS}}}Constant")
        if constant is None:
            constant = child(node, TNS, "Constant")
        if uri is None or constant is None:
            raise SoapFault("ErrorInvalidOperation", f"The fake cannot evaluate {name}.")
        actual = (value_of(uri.get("FieldURI", "")) or "").lower()
        expected = (constant.get("Value") or "").lower()
        if name == "IsEqualTo":
            return actual == expected
        if name == "IsNotEqualTo":
            return actual != expected
        if name == "Contains":
            return expected in actual
        raise SoapFault("ErrorInvalidOperation", f"The fake cannot evaluate {name}.")

    return evaluate(restriction)
