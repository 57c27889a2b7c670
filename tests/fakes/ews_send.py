"""Sending mail through the fake EWS: what CreateItem reads from a ``t:Message``.

"CreateItem operation (email message)": ``MessageDisposition`` is ``SaveOnly`` (answered with the
new ``ItemId``), ``SendOnly`` or ``SendAndSaveCopy`` (answered with an empty ``m:Items``: a sent
message has no id to give back); the copy goes to ``SavedItemFolderId``, by default Sent Items.
A message comes either as ``MimeContent`` (base64 of the RFC 5322 bytes, which win over any other
property; "MimeContent") or as properties (``Subject``, ``Body``, ``To/Cc/BccRecipients``), from
which the fake writes a plain MIME message. Response codes ("ResponseCode"):
ErrorMimeContentInvalidBase64String ("the MIME content in the request is not a valid base 64
string"), ErrorMimeContentInvalid (empty MIME), ErrorInvalidRecipients (sending "an item that has
no recipients"), ErrorMessageDispositionRequired (no ``MessageDisposition``).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.message import EmailMessage

from tests.fakes.ews_xml import TNS, EwsError, child, text_of

DISPOSITIONS = frozenset({"SaveOnly", "SendOnly", "SendAndSaveCopy"})
_RECIPIENT_FIELDS = (("To", "ToRecipients"), ("Cc", "CcRecipients"), ("Bcc", "BccRecipients"))
_HEADERS = email.parser.BytesHeaderParser()


@dataclass(frozen=True)
class SentMail:
    """One message the fake sent: the sending mailbox, the MIME bytes exactly as the client sent
    them (or as the fake wrote them from the properties), the ``MessageDisposition``
    (``SendOnly``/``SendAndSaveCopy``) and the recipient addresses (To, Cc and Bcc, in order)."""

    mailbox: str
    mime: bytes
    disposition: str
    recipients: tuple[str, ...]


def mime_content(message: ET.Element) -> bytes | None:
    """The decoded ``MimeContent``; None without one."""
    elem = child(message, TNS, "MimeContent")
    if elem is None:
        return None
    text = "".join((elem.text or "").split())
    if not text:
        raise EwsError("ErrorMimeContentInvalid")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EwsError("ErrorMimeContentInvalidBase64String") from None
    if not data.strip():
        raise EwsError("ErrorMimeContentInvalid")
    return data


def mime_recipients(mime: bytes) -> tuple[str, ...]:
    """Addresses in the To, Cc and Bcc headers (every occurrence, in that order)."""
    headers = _HEADERS.parsebytes(mime)
    values = [str(v) for name, _ in _RECIPIENT_FIELDS for v in headers.get_all(name) or []]
    return tuple(address for _, address in email.utils.getaddresses(values) if address)


def _mailboxes(message: ET.Element, container: str) -> list[tuple[str, str]]:
    """(name, address) of the ``t:Mailbox`` elements under ``t:{container}``."""
    holder = child(message, TNS, container)
    found = []
    for box in [] if holder is None else holder.findall(f"{{{TNS}}}Mailbox"):
        address = (text_of(box, TNS, "EmailAddress") or "").strip()
        if address:
            found.append(((text_of(box, TNS, "Name") or "").strip(), address))
    return found


def property_recipients(message: ET.Element) -> tuple[str, ...]:
    """Addresses in ``ToRecipients``, ``CcRecipients`` and ``BccRecipients``."""
    return tuple(a for _, field in _RECIPIENT_FIELDS for _, a in _mailboxes(message, field))


def compose(message: ET.Element, sender: tuple[str, str]) -> bytes:
    """A MIME message from a ``t:Message``'s properties (no Bcc header, as sent mail has none)."""
    mail = EmailMessage(policy=email.policy.SMTP)
    author = _mailboxes(message, "From")
    mail["From"] = email.utils.formataddr(author[0] if author else sender)
    for header, field in _RECIPIENT_FIELDS[:2]:
        boxes = _mailboxes(message, field)
        if boxes:
            mail[header] = ", ".join(email.utils.formataddr(b) for b in boxes)
    mail["Subject"] = text_of(message, TNS, "Subject") or ""
    mail["Date"] = email.utils.formatdate(usegmt=True)
    domain = sender[1].rpartition("@")[2] or "localhost"
    mail["Message-ID"] = (
        text_of(message, TNS, "InternetMessageId") or email.utils.make_msgid(domain=domain)
    ).strip()
    body = child(message, TNS, "Body")
    html = body is not None and body.get("BodyType", "Text").lower() == "html"
    text = "" if body is None else body.text or ""
    mail.set_content(text, subtype="html" if html else "plain")
    return mail.as_bytes()
