"""SOAP plumbing of the fake EWS: reading requests, writing responses and faults.

Shapes follow the EWS reference (learn.microsoft.com, "EWS XML elements in Exchange"): every
response carries ``ServerVersionInfo`` in the SOAP header ("ServerVersionInfo"); every operation
answers ``<m:{Op}Response><m:ResponseMessages><m:{Op}ResponseMessage ResponseClass=...>`` with
``ResponseCode`` (NoError or an error code), and on errors ``MessageText``,
``DescriptiveLinkKey`` and optionally ``MessageXml`` ("ResponseMessages", "ResponseCode").
Request-level failures are SOAP faults sent with HTTP 500, whose ``detail`` holds
``e:ResponseCode``, ``e:Message`` and ``t:MessageXml`` ("EWS throttling in Exchange":
ErrorServerBusy with the ``BackOffMilliseconds`` hint).

Responses are built with prefixed tag names (``t:Message``) and the namespace declarations on the
envelope, so ElementTree writes the familiar ``s:``/``m:``/``t:`` prefixes without touching its
global prefix registry.
"""

from __future__ import annotations

import base64
import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MNS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TNS = "http://schemas.microsoft.com/exchange/services/2006/types"
ENS = "http://schemas.microsoft.com/exchange/services/2006/errors"

# Exchange 2016 CU23 as it reports itself (15.1.2507.6). Exchange 2016 answers with the schema
# version string "V2017_07_11"; clients treat "V..._" strings as "the version you asked for".
SERVER_VERSION = {
    "MajorVersion": "15",
    "MinorVersion": "1",
    "MajorBuildNumber": "2507",
    "MinorBuildNumber": "6",
    "Version": "V2017_07_11",
}
# RequestServerVersion values an Exchange 2016 server accepts ("RequestServerVersion").
API_VERSIONS = frozenset(
    {
        "Exchange2007",
        "Exchange2007_SP1",
        "Exchange2010",
        "Exchange2010_SP1",
        "Exchange2010_SP2",
        "Exchange2013",
        "Exchange2013_SP1",
        "Exchange2015",
        "Exchange2015_SP1",
        "Exchange2016",
        "V2015_10_05",
        "V2016_10_10",
        "V2017_07_11",
    }
)

# MessageText values as the reference's error examples and "ResponseCode" word them.
MESSAGES = {
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorFolderExists": "A folder with the specified name already exists.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorImpersonateUserDenied": (
        "The account does not have permission to impersonate the requested user."
    ),
    "ErrorInternalServerError": "An internal server error occurred. The operation failed.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
    "ErrorInvalidOperation": "The operation is not valid.",
    "ErrorInvalidRecipients": "The item has no recipients; it cannot be sent.",
    "ErrorInvalidServerVersion": "The specified server version is invalid.",
    "ErrorInvalidSyncStateData": "Synchronization state data is corrupt or otherwise invalid.",
    "ErrorIrresolvableConflict": (
        "The send or update operation could not be performed because the change key passed in "
        "the request does not match the current change key for the item."
    ),
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorMessageDispositionRequired": "MessageDisposition is required for email messages.",
    "ErrorMimeContentInvalid": "The MIME content is invalid.",
    "ErrorMimeContentInvalidBase64String": (
        "The MIME content in the request is not a valid base 64 string."
    ),
    "ErrorNameResolutionMultipleResults": "Multiple results were found.",
    "ErrorNameResolutionNoResults": "No results were found.",
    "ErrorNonExistentMailbox": "The SMTP address has no mailbox associated with it.",
    "ErrorSchemaValidation": "The request failed schema validation.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
    "ErrorToFolderNotFound": "The destination folder could not be found.",
}


class EwsError(Exception):
    """An error answered in a response message (``ResponseClass="Error"``)."""

    def __init__(self, code: str, text: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.text = text or MESSAGES.get(code, code)


class SoapFault(Exception):
    """An error answered as an HTTP 500 SOAP fault (the whole request fails)."""

    def __init__(self, code: str, text: str | None = None, back_off_ms: int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.text = text or MESSAGES.get(code, code)
        self.back_off_ms = back_off_ms


# --- reading requests ------------------------------------------------------------------------


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def child(elem: ET.Element, ns: str, name: str) -> ET.Element | None:
    return elem.find(q(ns, name))


def text_of(elem: ET.Element | None, ns: str, name: str) -> str | None:
    if elem is None:
        return None
    found = elem.find(q(ns, name))
    return None if found is None else (found.text or "")


def parse_bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


def parse_datetime(value: str) -> dt.datetime:
    """xs:dateTime as EWS sends it (``2024-05-06T08:00:00Z``, offsets, fractional seconds)."""
    parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def format_datetime(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PropKey(NamedTuple):
    """A MAPI property as ``ExtendedFieldURI`` names it: by ``tag``, or by property set (a GUID,
    lower case) and ``name`` or ``id`` ("ExtendedFieldURI")."""

    tag: int | None = None
    set_id: str | None = None
    name: str | None = None
    id: int | None = None


# DistinguishedPropertySetId names and their GUIDs ("ExtendedFieldURI", MS-OXPROPS 1.3.2).
PROPERTY_SETS = {
    "Meeting": "6ed8da90-450b-101b-98da-00aa003f1305",
    "Appointment": "00062002-0000-0000-c000-000000000046",
    "Common": "00062008-0000-0000-c000-000000000046",
    "PublicStrings": "00020329-0000-0000-c000-000000000046",
    "Address": "00062004-0000-0000-c000-000000000046",
    "InternetHeaders": "00020386-0000-0000-c000-000000000046",
    "CalendarAssistant": "11000e07-b51b-40d6-af21-caa85edab1d0",
    "UnifiedMessaging": "4442858e-a9e3-4e80-b900-317a210cc15b",
    "Task": "00062003-0000-0000-c000-000000000046",
}


def prop_key(uri: ET.Element) -> PropKey:
    """Normalise an ``ExtendedFieldURI``: tags as numbers, property sets as GUIDs."""
    tag = uri.get("PropertyTag")
    if tag is not None:
        return PropKey(tag=int(tag, 0))
    set_id = uri.get("PropertySetId")
    if set_id is None:
        set_id = PROPERTY_SETS.get(uri.get("DistinguishedPropertySetId") or "", "")
    set_id = set_id.strip("{}").lower()
    prop_id = uri.get("PropertyId")
    if prop_id is not None:
        return PropKey(set_id=set_id, id=int(prop_id, 0))
    return PropKey(set_id=set_id, name=uri.get("PropertyName"))


def key_attrs(key: PropKey, property_type: str) -> dict[str, str]:
    """``ExtendedFieldURI`` attributes for a stored property, as EWS writes them back."""
    attrs: dict[str, str] = {}
    if key.tag is not None:
        attrs["PropertyTag"] = f"0x{key.tag:x}"
    else:
        names = {guid: name for name, guid in PROPERTY_SETS.items()}
        if key.set_id in names:
            attrs["DistinguishedPropertySetId"] = names[key.set_id]
        else:
            attrs["PropertySetId"] = key.set_id or ""
        if key.id is not None:
            attrs["PropertyId"] = str(key.id)
        else:
            attrs["PropertyName"] = key.name or ""
    attrs["PropertyType"] = property_type
    return attrs


@dataclass
class Shape:
    """An ``ItemShape``/``FolderShape``: base shape, extra ``FieldURI``s, ``ExtendedFieldURI``s
    (with the attributes the client used, echoed back so it can match them) and MIME."""

    base: str = "IdOnly"
    fields: set[str] = field(default_factory=set)
    extended: list[tuple[PropKey, dict[str, str]]] = field(default_factory=list)
    mime: bool = False

    def wants(self, uri: str, defaults: frozenset[str], all_props: frozenset[str]) -> bool:
        if uri in self.fields:
            return True
        if self.base == "Default":
            return uri in defaults
        return self.base == "AllProperties" and uri in all_props


def parse_shape(elem: ET.Element | None) -> Shape:
    if elem is None:
        raise SoapFault("ErrorSchemaValidation")
    shape = Shape(base=(text_of(elem, TNS, "BaseShape") or "IdOnly").strip())
    shape.mime = parse_bool(text_of(elem, TNS, "IncludeMimeContent"))
    props = child(elem, TNS, "AdditionalProperties")
    for prop in () if props is None else props:
        name = local(prop.tag)
        if name == "FieldURI":
            shape.fields.add(prop.get("FieldURI", ""))
        elif name == "ExtendedFieldURI":
            shape.extended.append((prop_key(prop), dict(prop.attrib)))
    shape.mime = shape.mime or "item:MimeContent" in shape.fields
    return shape


# --- writing responses -----------------------------------------------------------------------


def el(tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.Element(tag, attrs)
    if text is not None:
        elem.text = text
    return elem


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.SubElement(parent, tag, attrs)
    if text is not None:
        elem.text = text
    return elem


def bool_text(value: bool) -> str:
    return "true" if value else "false"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def response_message(op: str, *children: ET.Element) -> ET.Element:
    msg = el(f"m:{op}ResponseMessage", ResponseClass="Success")
    sub(msg, "m:ResponseCode", "NoError")
    msg.extend(children)
    return msg


def error_message(
    op: str,
    code: str,
    text: str | None = None,
    extra: Iterable[ET.Element] = (),
    *,
    back_off_ms: int | None = None,
) -> ET.Element:
    """An error response message; ``back_off_ms`` adds ``m:MessageXml`` with
    ``<t:Value Name="BackOffMilliseconds">`` (ErrorServerBusy, "EWS throttling in Exchange")."""
    msg = el(f"m:{op}ResponseMessage", ResponseClass="Error")
    sub(msg, "m:MessageText", text or MESSAGES.get(code, code))
    sub(msg, "m:ResponseCode", code)
    sub(msg, "m:DescriptiveLinkKey", "0")
    if back_off_ms is not None:
        xml = sub(msg, "m:MessageXml")
        sub(xml, "t:Value", str(back_off_ms), Name="BackOffMilliseconds")
    msg.extend(extra)
    return msg


def _envelope() -> ET.Element:
    return el(
        "s:Envelope",
        **{"xmlns:s": SOAP, "xmlns:m": MNS, "xmlns:t": TNS, "xmlns:e": ENS},
    )


def _document(envelope: ET.Element) -> bytes:
    data: bytes = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return data


def envelope(op: str, messages: Iterable[ET.Element]) -> bytes:
    """A complete success (HTTP 200) document; messages may carry errors of their own."""
    env = _envelope()
    header = sub(env, "s:Header")
    sub(header, "t:ServerVersionInfo", **SERVER_VERSION)
    body = sub(env, "s:Body")
    response = sub(body, f"m:{op}Response")
    sub(response, "m:ResponseMessages").extend(messages)
    return _document(env)


def fault(error: SoapFault) -> bytes:
    """An HTTP 500 SOAP fault; ErrorServerBusy carries ``BackOffMilliseconds`` in MessageXml."""
    env = _envelope()
    body = sub(env, "s:Body")
    soap_fault = sub(body, "s:Fault")
    sub(soap_fault, "faultcode", f"t:{error.code}")
    sub(soap_fault, "faultstring", error.text, **{"xml:lang": "en-US"})
    detail = sub(soap_fault, "detail")
    sub(detail, "e:ResponseCode", error.code)
    sub(detail, "e:Message", error.text)
    if error.back_off_ms is not None:
        xml = sub(detail, "t:MessageXml")
        sub(xml, "t:Value", str(error.back_off_ms), Name="BackOffMilliseconds")
    return _document(env)


def id_elems(parent: ET.Element | None) -> Iterator[ET.Element]:
    """The id elements (ItemId, FolderId, DistinguishedFolderId, ...) under a container."""
    yield from () if parent is None else parent
