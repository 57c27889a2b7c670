"""How the fake EWS writes items and folders.

Elements follow the schema order of ItemType/MessageType/CalendarItemType and FolderType
("Message", "CalendarItem", "Folder" in the EWS reference). ``BaseShape`` IdOnly, Default and
AllProperties select the properties together with ``AdditionalProperties``; ``MimeContent``
(base64) only comes with ``IncludeMimeContent`` or ``item:MimeContent`` ("MimeContent"). Properties
the fake does not model, or an item does not have, are left out, as EWS leaves them out.
Extended properties are written back with the ``ExtendedFieldURI`` attributes the client asked
with, so it can match them to its definitions.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable

from tests.fakes.ews_store import FLAG_KEYS, EwsStore, ExtValue, Flag, Folder, Item
from tests.fakes.ews_xml import Shape, b64, bool_text, el, format_datetime, sub

_MESSAGE_DEFAULT = frozenset(
    {
        "item:Subject",
        "item:Sensitivity",
        "item:Size",
        "item:DateTimeSent",
        "item:DateTimeCreated",
        "item:HasAttachments",
        "message:From",
        "message:IsRead",
    }
)
_CALENDAR_DEFAULT = frozenset(
    {"item:Subject", "item:Sensitivity", "calendar:Start", "calendar:End", "calendar:Location"}
)
_ITEM_ALL = frozenset(
    {
        "item:ParentFolderId",
        "item:ItemClass",
        "item:Subject",
        "item:Sensitivity",
        "item:DateTimeReceived",
        "item:Size",
        "item:Categories",
        "item:Importance",
        "item:InReplyTo",
        "item:IsSubmitted",
        "item:IsDraft",
        "item:IsFromMe",
        "item:IsResend",
        "item:IsUnmodified",
        "item:DateTimeSent",
        "item:DateTimeCreated",
        "item:HasAttachments",
        "item:LastModifiedTime",
        "item:ConversationId",
        "item:Flag",
    }
)
_MESSAGE_ALL = _ITEM_ALL | {
    "message:Sender",
    "message:ToRecipients",
    "message:CcRecipients",
    "message:IsReadReceiptRequested",
    "message:IsDeliveryReceiptRequested",
    "message:ConversationTopic",
    "message:From",
    "message:InternetMessageId",
    "message:IsRead",
    "message:References",
}
_CALENDAR_ALL = _ITEM_ALL | {
    "calendar:Start",
    "calendar:End",
    "calendar:IsAllDayEvent",
    "calendar:LegacyFreeBusyStatus",
    "calendar:Location",
    "calendar:CalendarItemType",
}
_FOLDER_DEFAULT = frozenset(
    {"folder:DisplayName", "folder:TotalCount", "folder:ChildFolderCount", "folder:UnreadCount"}
)
_FOLDER_ALL = _FOLDER_DEFAULT | {
    "folder:ParentFolderId",
    "folder:FolderClass",
    "folder:EffectiveRights",
}
FOLDER_TAGS = {
    "IPF.Appointment": "t:CalendarFolder",
    "IPF.Contact": "t:ContactsFolder",
    "IPF.Task": "t:TasksFolder",
}
_TOPIC = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs)\s*:\s*)+", re.IGNORECASE)


def mailbox_elem(parent: ET.Element, name: str, address: str, mailbox_type: str = "OneOff") -> None:
    box = sub(parent, "t:Mailbox")
    sub(box, "t:Name", name or address)
    sub(box, "t:EmailAddress", address)
    sub(box, "t:RoutingType", "SMTP")
    sub(box, "t:MailboxType", mailbox_type)


def _ext_value(parent: ET.Element, attrs: dict[str, str], value: ExtValue) -> None:
    prop = sub(parent, "t:ExtendedProperty")
    sub(prop, "t:ExtendedFieldURI", **attrs)
    if isinstance(value.value, tuple):
        values = sub(prop, "t:Values")
        for v in value.value:
            sub(values, "t:Value", v)
    else:
        sub(prop, "t:Value", value.value)


def item_xml(store: EwsStore, item: Item, shape: Shape) -> ET.Element:
    message = item.kind == "Message"
    defaults = _MESSAGE_DEFAULT if message else _CALENDAR_DEFAULT
    every = _MESSAGE_ALL if message else _CALENDAR_ALL

    def want(uri: str) -> bool:
        return shape.wants(uri, defaults, every)

    e = el(f"t:{item.kind}")
    if shape.mime and message:
        sub(e, "t:MimeContent", b64(item.mime), CharacterSet="UTF-8")
    sub(e, "t:ItemId", Id=item.id, ChangeKey=item.changekey)
    if want("item:ParentFolderId"):
        parent = store.folders[item.folder_id]
        sub(e, "t:ParentFolderId", Id=parent.id, ChangeKey=parent.changekey)
    if want("item:ItemClass"):
        sub(e, "t:ItemClass", "IPM.Note" if message else "IPM.Appointment")
    if want("item:Subject") and item.subject:
        sub(e, "t:Subject", item.subject)
    if want("item:Sensitivity"):
        sub(e, "t:Sensitivity", "Normal")
    if want("item:DateTimeReceived"):
        sub(e, "t:DateTimeReceived", format_datetime(item.received))
    if want("item:Size"):
        sub(e, "t:Size", str(len(item.mime)))
    if want("item:Categories") and item.categories:
        categories = sub(e, "t:Categories")
        for name in item.categories:
            sub(categories, "t:String", name)
    if want("item:Importance"):
        sub(e, "t:Importance", "Normal")
    if want("item:InReplyTo") and item.in_reply_to:
        sub(e, "t:InReplyTo", item.in_reply_to)
    for uri in ("IsSubmitted", "IsDraft", "IsFromMe", "IsResend"):
        if want(f"item:{uri}"):
            sub(e, f"t:{uri}", "false")
    if want("item:IsUnmodified"):
        sub(e, "t:IsUnmodified", bool_text(item.version == 1))
    if want("item:DateTimeSent") and (item.sent or not message):
        sub(e, "t:DateTimeSent", format_datetime(item.sent or item.received))
    if want("item:DateTimeCreated"):
        sub(e, "t:DateTimeCreated", format_datetime(item.received))
    if want("item:HasAttachments"):
        sub(e, "t:HasAttachments", bool_text(item.has_attachments))
    for key, attrs in shape.extended:
        value = store.flag_property(item, key) if key in FLAG_KEYS else item.extended.get(key)
        if value is not None:
            _ext_value(e, attrs, value)
    if want("item:LastModifiedTime") and item.modified:
        sub(e, "t:LastModifiedTime", format_datetime(item.modified))
    if want("item:ConversationId"):
        sub(e, "t:ConversationId", Id=item.conversation_id)
    if want("item:Flag"):
        _flag_xml(e, item.flag)
    if message:
        _message_fields(e, item, want)
    else:
        _calendar_fields(e, item, want)
    return e


def _flag_xml(parent: ET.Element, flag: Flag) -> None:
    e = sub(parent, "t:Flag")
    sub(e, "t:FlagStatus", flag.status)
    for tag, moment in (
        ("StartDate", flag.start),
        ("DueDate", flag.due),
        ("CompleteDate", flag.complete),
    ):
        if moment is not None:
            sub(e, f"t:{tag}", format_datetime(moment))


def _message_fields(e: ET.Element, item: Item, want: Callable[[str], bool]) -> None:
    if want("message:Sender") and item.sender:
        mailbox_elem(sub(e, "t:Sender"), *item.sender)
    for uri, people in (("ToRecipients", item.to), ("CcRecipients", item.cc)):
        if want(f"message:{uri}") and people:
            box = sub(e, f"t:{uri}")
            for name, address in people:
                mailbox_elem(box, name, address)
    for uri in ("IsReadReceiptRequested", "IsDeliveryReceiptRequested"):
        if want(f"message:{uri}"):
            sub(e, f"t:{uri}", "false")
    if want("message:ConversationTopic"):
        sub(e, "t:ConversationTopic", _TOPIC.sub("", item.subject))
    if want("message:From") and item.sender:
        mailbox_elem(sub(e, "t:From"), *item.sender)
    if want("message:InternetMessageId") and item.message_id:
        sub(e, "t:InternetMessageId", item.message_id)
    if want("message:IsRead"):
        sub(e, "t:IsRead", bool_text(item.is_read))
    if want("message:References") and item.references:
        sub(e, "t:References", item.references)


def _calendar_fields(e: ET.Element, item: Item, want: Callable[[str], bool]) -> None:
    if want("calendar:Start") and item.start:
        sub(e, "t:Start", format_datetime(item.start))
    if want("calendar:End") and item.end:
        sub(e, "t:End", format_datetime(item.end))
    if want("calendar:IsAllDayEvent"):
        sub(e, "t:IsAllDayEvent", "false")
    if want("calendar:LegacyFreeBusyStatus"):
        sub(e, "t:LegacyFreeBusyStatus", "Busy")
    if want("calendar:Location") and item.location:
        sub(e, "t:Location", item.location)
    if want("calendar:CalendarItemType"):
        sub(e, "t:CalendarItemType", "Single")


def folder_xml(store: EwsStore, folder: Folder, shape: Shape) -> ET.Element:
    def want(uri: str) -> bool:
        return shape.wants(uri, _FOLDER_DEFAULT, _FOLDER_ALL)

    tag = FOLDER_TAGS.get(folder.folder_class or "", "t:Folder")
    e = el(tag)
    sub(e, "t:FolderId", Id=folder.id, ChangeKey=folder.changekey)
    if want("folder:ParentFolderId") and folder.parent_id:
        parent = store.folders[folder.parent_id]
        sub(e, "t:ParentFolderId", Id=parent.id, ChangeKey=parent.changekey)
    if want("folder:FolderClass") and folder.folder_class:
        sub(e, "t:FolderClass", folder.folder_class)
    if want("folder:DisplayName"):
        sub(e, "t:DisplayName", folder.name)
    if want("folder:TotalCount"):
        sub(e, "t:TotalCount", str(len(folder.items)))
    if want("folder:ChildFolderCount"):
        sub(e, "t:ChildFolderCount", str(len(store.children(folder))))
    if want("folder:EffectiveRights"):
        rights = sub(e, "t:EffectiveRights")
        for right in ("CreateAssociated", "CreateContents", "CreateHierarchy", "Delete"):
            sub(rights, f"t:{right}", "true")
        for right in ("Modify", "Read", "ViewPrivateItems"):
            sub(rights, f"t:{right}", "true")
    if want("folder:UnreadCount") and tag == "t:Folder":
        unread = sum(1 for i in folder.items.values() if not i.is_read)
        sub(e, "t:UnreadCount", str(unread))
    return e
