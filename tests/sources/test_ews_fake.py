"""Tests of the fake EWS itself, driven by unmodified exchangelib configured as an app would
configure it (Basic or OAuth credentials, an explicit service endpoint, the FailFast default retry
policy), over real HTTP(S) on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import spnego
from exchangelib import (  # type: ignore[import-untyped]
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    CalendarItem,
    Configuration,
    Credentials,
    Folder,
    Identity,
    Message,
    OAuth2AuthorizationCodeCredentials,
    Version,
    close_connections,
)
from exchangelib.errors import (  # type: ignore[import-untyped]
    ErrorAccessDenied,
    ErrorFolderExists,
    ErrorImpersonateUserDenied,
    ErrorInvalidRecipients,
    ErrorInvalidSyncStateData,
    ErrorItemNotFound,
    ErrorMimeContentInvalid,
    ErrorMimeContentInvalidBase64String,
    ErrorSendAsDenied,
    ErrorServerBusy,
    UnauthorizedError,
)
from exchangelib.extended_properties import ExtendedProperty  # type: ignore[import-untyped]
from exchangelib.protocol import FailFast  # type: ignore[import-untyped]
from exchangelib.services import CreateItem  # type: ignore[import-untyped]

from tests.fakes.ews import FakeEws
from tests.fakes.ews_send import SentMail
from tests.fakes.ews_xml import PropKey

ANN = "ann@contoso.com"
PASSWORD = "Sommer-2024!"
EXCHANGE_2016 = Build(15, 1)
NS = {
    "s": "http://schemas.xmlsoap.org/soap/envelope/",
    "m": "http://schemas.microsoft.com/exchange/services/2006/messages",
    "t": "http://schemas.microsoft.com/exchange/services/2006/types",
    "e": "http://schemas.microsoft.com/exchange/services/2006/errors",
}


class FlagStatus(ExtendedProperty):  # type: ignore[misc]
    """PidTagFlagStatus: how a client without an EWS ``Flag`` field reads follow-up flags."""

    property_tag = 0x1090
    property_type = "Integer"


class MailfilerRef(ExtendedProperty):  # type: ignore[misc]
    distinguished_property_set_id = "PublicStrings"
    property_name = "MailfilerRef"
    property_type = "String"


def mail(n: int, subject: str = "Note") -> bytes:
    head = f"From: Bob <bob{n}@example.com>\r\nTo: {ANN}\r\nSubject: {subject} {n}"
    return f"{head}\r\nMessage-ID: <{n}@example.com>\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def ews() -> Iterator[FakeEws]:
    with FakeEws() as fake:
        fake.add_user(ANN, PASSWORD)
        yield fake
        assert fake.server_errors == []
    close_connections()  # exchangelib caches protocols (and their sessions) per endpoint


@pytest.fixture
def flag_status() -> Iterator[None]:
    Message.register("flag_status", FlagStatus)
    yield
    Message.deregister("flag_status")


def basic_account(fake: FakeEws, user: str = ANN, password: str = PASSWORD) -> Any:
    config = Configuration(
        service_endpoint=fake.url,
        credentials=Credentials(user, password),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
    )
    return Account(user, config=config, autodiscover=False, access_type=DELEGATE)


def test_sync_pages_through_250_items_with_chained_states(ews: FakeEws) -> None:
    ids = ews.add_messages(ANN, "inbox", (mail(n) for n in range(250)))
    inbox = basic_account(ews).inbox

    changes = list(inbox.sync_items(max_changes_returned=100, only_fields=["subject"]))

    assert [kind for kind, _ in changes] == ["create"] * 250
    assert len({item.id for _, item in changes}) == 250
    assert {item.id for _, item in changes} == set(ids)
    calls = ews.sync_calls
    assert [c.changes for c in calls] == [100, 100, 50]
    assert [c.includes_last for c in calls] == [False, False, True]
    assert calls[0].state_in is None
    assert [c.state_in for c in calls[1:]] == [c.state_out for c in calls[:-1]]
    assert len({c.state_out for c in calls}) == 3
    assert inbox.item_sync_state == calls[-1].state_out
    assert list(inbox.sync_items(only_fields=["subject"])) == []  # caught up


def test_get_item_returns_mime_bytes_unchanged_in_batches(ews: FakeEws) -> None:
    odd = (
        b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>\r\nSubject: raw\r\n"
        b"Content-Type: text/plain; charset=latin-1\r\n\r\nGr\xfc\xdfe\n  trailing  \r\n\x00end"
    )
    first = ews.add_message(ANN, "inbox", odd)
    ids = [first, *ews.add_messages(ANN, "inbox", (mail(n) for n in range(249)))]
    account = basic_account(ews)

    items = list(account.fetch(ids=[(i, None) for i in ids], only_fields=["mime_content"]))

    assert items[0].mime_content == odd
    assert [i.mime_content for i in items[1:]] == [mail(n) for n in range(249)]
    assert ews.get_item_counts == [100, 100, 50]
    assert ews.calls["GetItem"] == 3


def test_update_is_read_and_categories_visible_in_fake(ews: FakeEws) -> None:
    item_id = ews.add_message(ANN, "inbox", mail(1))
    account = basic_account(ews)
    [item] = account.fetch(ids=[(item_id, None)], only_fields=["is_read", "categories"])
    before = ews.item(ANN, item_id).changekey

    item.is_read = True
    item.categories = ["Filed", "Project X"]
    item.save(update_fields=["is_read", "categories"])

    state = ews.item(ANN, item_id)
    assert state.is_read is True
    assert state.categories == ("Filed", "Project X")
    assert state.changekey != before and item.changekey == state.changekey
    item.categories = []
    item.save(update_fields=["categories"])  # an empty list is a DeleteItemField
    assert ews.item(ANN, item_id).categories == ()


def test_move_changes_the_item_id_and_the_old_id_is_gone(ews: FakeEws) -> None:
    item_id = ews.add_message(ANN, "inbox", mail(1))
    account = basic_account(ews)
    inbox = account.inbox
    list(inbox.sync_items(only_fields=["subject"]))
    done = Folder(parent=inbox, name="Done")
    done.save()
    [item] = account.fetch(ids=[(item_id, None)], only_fields=["subject"])

    item.move(done)

    assert item.id != item_id
    assert not ews.exists(ANN, item_id)
    assert ews.item(ANN, item.id).folder == "Done"
    assert ews.folder_items(ANN, "Inbox/Done")[0].id == item.id
    [gone] = account.fetch(ids=[(item_id, None)])
    assert isinstance(gone, ErrorItemNotFound)
    [(kind, old)] = inbox.sync_items(only_fields=["subject"])
    assert (kind, old.id) == ("delete", item_id)
    [(kind, new)] = done.sync_items(only_fields=["subject"])
    assert (kind, new.id, new.subject) == ("create", item.id, "Note 1")


def test_busy_raises_server_busy_with_back_off_and_no_retry(ews: FakeEws) -> None:
    item_id = ews.add_message(ANN, "inbox", mail(1))
    account = basic_account(ews)
    assert isinstance(account.protocol.retry_policy, FailFast)  # the default: never sleeps
    ews.busy(times=1, back_off_ms=2000, operation="GetItem")

    started = time.monotonic()
    with pytest.raises(ErrorServerBusy) as raised:
        list(account.fetch(ids=[(item_id, None)], only_fields=["subject"]))

    assert raised.value.back_off == pytest.approx(2.0)
    assert time.monotonic() - started < 1.0
    assert ews.calls["GetItem"] == 1
    assert ews.requests[-1].status == 500
    [item] = account.fetch(ids=[(item_id, None)], only_fields=["subject"])
    assert item.subject == "Note 1"


def test_corrupted_or_foreign_sync_state_is_invalid(ews: FakeEws) -> None:
    ews.add_messages(ANN, "inbox", (mail(n) for n in range(3)))
    account = basic_account(ews)
    inbox = account.inbox
    list(inbox.sync_items(only_fields=["subject"]))
    state = inbox.item_sync_state

    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.sent.sync_items(sync_state=state, only_fields=["subject"]))
    with pytest.raises(ErrorInvalidSyncStateData):
        list(inbox.sync_items(sync_state="H4sIAAAAAAAEAGarbled==", only_fields=["subject"]))
    assert list(inbox.sync_items(sync_state=state, only_fields=["subject"])) == []

    ews.corrupt_sync_states()
    with pytest.raises(ErrorInvalidSyncStateData):
        list(inbox.sync_items(sync_state=state, only_fields=["subject"]))
    inbox.item_sync_state = None  # sync_items(sync_state=None) falls back to item_sync_state
    assert len(list(inbox.sync_items(only_fields=["subject"]))) == 3


def test_wrong_password_raises_unauthorized(ews: FakeEws) -> None:
    with pytest.raises(UnauthorizedError):
        _ = basic_account(ews, password="wrong").inbox
    assert ews.unauthorized == 1
    assert sum(ews.calls.values()) == 0


def test_flag_change_appears_as_update_in_next_sync(ews: FakeEws, flag_status: None) -> None:
    item_id = ews.add_message(ANN, "inbox", mail(1))
    inbox = basic_account(ews).inbox
    [(_, item)] = inbox.sync_items(only_fields=["subject", "flag_status"])
    assert item.flag_status is None

    due = dt.datetime(2024, 6, 1, 9, tzinfo=dt.UTC)
    ews.set_flag(ANN, item_id, "Flagged", due=due)
    [(kind, item)] = inbox.sync_items(only_fields=["subject", "flag_status"])
    assert (kind, item.id, item.flag_status) == ("update", item_id, 2)

    item.flag_status = 1  # the client completes the flag through the MAPI property
    item.save(update_fields=["flag_status"])
    assert ews.item(ANN, item_id).flag.status == "Complete"
    assert ews.item(ANN, item_id).flag.due == due


def test_read_flag_changes_when_asked_for(flag_status: None) -> None:
    with FakeEws(read_flag_changes=True) as fake:
        fake.add_user(ANN, PASSWORD)
        item_id = fake.add_message(ANN, "inbox", mail(1))
        inbox = basic_account(fake).inbox
        list(inbox.sync_items(only_fields=["subject"]))
        fake.mark_read(ANN, item_id)
        [(kind, (ref, is_read))] = inbox.sync_items(only_fields=["subject"])
        assert (kind, ref.id, is_read) == ("read_flag_change", item_id, True)
    close_connections()


def test_folder_paths_and_create_folder(ews: FakeEws) -> None:
    account = basic_account(ews)

    inbox = account.root / "Top of Information Store" / "Inbox"
    assert inbox.id == account.inbox.id == ews.folder_id(ANN, "inbox")
    sub = Folder(parent=account.inbox, name="Done")
    sub.save()
    assert ews.folder_id(ANN, "Inbox/Done") == sub.id
    assert (account.inbox / "Done").id == sub.id
    assert (account.inbox // "Done").id == sub.id
    with pytest.raises(ErrorFolderExists):
        Folder(parent=account.inbox, name="done").save()


def test_version_and_auth_type_probing() -> None:
    with FakeEws() as fake:
        fake.add_user(ANN, PASSWORD)
        config = Configuration(service_endpoint=fake.url, credentials=Credentials(ANN, PASSWORD))
        account = Account(ANN, config=config, autodiscover=False, access_type=DELEGATE)

        assert account.version.build == Build(15, 1, 2507, 6)
        assert config.auth_type == BASIC  # from the 401's WWW-Authenticate
        assert fake.calls["ConvertId"] == 1
        assert account.inbox.name == "Inbox"
    close_connections()


def test_impersonation_is_recorded_and_checked(ews: FakeEws) -> None:
    ews.add_user("svc@contoso.com", "svc-pw", impersonation=True)
    ews.add_user("eve@contoso.com", "eve-pw")
    ews.add_message(ANN, "inbox", mail(1))

    def impersonating(user: str, password: str) -> Any:
        config = Configuration(
            service_endpoint=ews.url,
            credentials=Credentials(user, password),
            auth_type=BASIC,
            version=Version(build=EXCHANGE_2016),
        )
        return Account(ANN, config=config, autodiscover=False, access_type=IMPERSONATION)

    assert impersonating("svc@contoso.com", "svc-pw").inbox.total_count == 1
    request = ews.requests[-1]
    assert (request.user, request.impersonated, request.mailboxes) == (
        "svc@contoso.com",
        ANN,
        (ANN,),
    )
    with pytest.raises(ErrorImpersonateUserDenied):
        _ = impersonating("eve@contoso.com", "eve-pw").inbox
    eve_config = basic_account(ews, "eve@contoso.com", "eve-pw").protocol.config
    with pytest.raises(ErrorAccessDenied):  # delegate access needs a grant
        _ = Account(ANN, config=eve_config, access_type=DELEGATE).inbox
    ews.grant_access(ANN, "eve@contoso.com")
    assert Account(ANN, config=eve_config, access_type=DELEGATE).inbox.total_count == 1
    assert ews.requests[-1].user == "eve@contoso.com"
    assert ews.requests[-1].mailboxes == (ANN,)


def test_bearer_token_over_https(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeEws(tls=True, check_bearer=lambda token: token == "app-token") as fake:
        for name, value in fake.ca_env().items():
            monkeypatch.setenv(name, value)
        fake.add_user(ANN)
        fake.add_message(ANN, "inbox", mail(1))
        token = {"access_token": "app-token", "token_type": "Bearer", "expires_in": 3600}
        credentials = OAuth2AuthorizationCodeCredentials(
            access_token={**token, "expires_at": time.time() + 3600},
            identity=Identity(primary_smtp_address=ANN),
        )
        config = Configuration(
            service_endpoint=fake.url,
            credentials=credentials,
            auth_type=OAUTH2,
            version=Version(build=EXCHANGE_2016),
        )
        account = Account(ANN, config=config, autodiscover=False, access_type=IMPERSONATION)

        assert fake.url.startswith("https://")
        assert account.inbox.total_count == 1
        assert fake.requests[-1].impersonated == ANN
        assert fake.requests[-1].user is None
    close_connections()


def test_calendar_items_with_extended_properties() -> None:
    CalendarItem.register("mailfiler_ref", MailfilerRef)
    try:
        with FakeEws() as fake:
            fake.add_user(ANN, PASSWORD)
            start = dt.datetime(2024, 5, 6, 9, tzinfo=dt.UTC)
            ref = PropKey(set_id="00020329-0000-0000-c000-000000000046", name="MailfilerRef")
            event_id = fake.add_event(
                ANN,
                "Review",
                start,
                start + dt.timedelta(hours=1),
                extended={ref: ("String", "case-42")},
            )
            calendar = basic_account(fake).calendar
            fields = ["subject", "start", "end", "mailfiler_ref"]
            [(kind, event)] = calendar.sync_items(only_fields=fields)
            assert (kind, event.subject, event.mailfiler_ref) == ("create", "Review", "case-42")
            assert event.start == start

            later = start + dt.timedelta(days=1)
            fake.move_event(ANN, event_id, later, later + dt.timedelta(hours=1))
            [(kind, event)] = calendar.sync_items(only_fields=fields)
            assert (kind, event.id, event.start) == ("update", event_id, later)
        close_connections()
    finally:
        CalendarItem.deregister("mailfiler_ref")


def test_fail_next_answers_error_per_message_and_delete(ews: FakeEws) -> None:
    ids = ews.add_messages(ANN, "inbox", (mail(n) for n in range(2)))
    account = basic_account(ews)
    ews.fail_next("GetItem", "ErrorItemNotFound")

    failed = list(account.fetch(ids=[(i, None) for i in ids], only_fields=["subject"]))

    assert [type(f) for f in failed] == [ErrorItemNotFound, ErrorItemNotFound]
    [item, _] = account.fetch(ids=[(i, None) for i in ids], only_fields=["subject"])
    item.delete()
    assert not ews.exists(ANN, ids[0])
    assert [s.id for s in ews.folder_items(ANN, "inbox")] == [ids[1]]


def soap(fake: FakeEws, body: str) -> tuple[int, ET.Element]:
    """POST one request the way the reference's examples are written."""
    document = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{NS["s"]}" xmlns:t="{NS["t"]}" xmlns:m="{NS["m"]}">'
        '<soap:Header><t:RequestServerVersion Version="Exchange2016"/></soap:Header>'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )
    response = httpx.post(
        fake.url,
        content=document.encode(),
        auth=(ANN, PASSWORD),
        headers={"Content-Type": "text/xml; charset=utf-8"},
    )
    return response.status_code, ET.fromstring(response.content)


def get_item(item_id: str, *uris: str) -> str:
    fields = "".join(f'<t:FieldURI FieldURI="{uri}"/>' for uri in uris)
    return (
        "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
        f"<t:AdditionalProperties>{fields}</t:AdditionalProperties></m:ItemShape>"
        f'<m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>'
    )


def test_documented_shapes_over_raw_soap(ews: FakeEws) -> None:
    item_id = ews.add_message(ANN, "inbox", mail(1))
    start, due = dt.datetime(2024, 6, 1, tzinfo=dt.UTC), dt.datetime(2024, 6, 3, tzinfo=dt.UTC)
    ews.set_flag(ANN, item_id, "Flagged", start=start, due=due)

    status, doc = soap(ews, get_item(item_id, "item:Flag", "message:IsRead"))

    assert status == 200
    info = doc.find("s:Header/t:ServerVersionInfo", NS)
    assert info is not None and (info.get("MajorVersion"), info.get("MinorVersion")) == ("15", "1")
    message = doc.find("s:Body/m:GetItemResponse/m:ResponseMessages/m:GetItemResponseMessage", NS)
    assert message is not None and message.get("ResponseClass") == "Success"
    assert message.findtext("m:ResponseCode", namespaces=NS) == "NoError"
    flag = message.find("m:Items/t:Message/t:Flag", NS)
    assert flag is not None
    assert flag.findtext("t:FlagStatus", namespaces=NS) == "Flagged"
    assert flag.findtext("t:StartDate", namespaces=NS) == "2024-06-01T00:00:00Z"
    assert flag.findtext("t:DueDate", namespaces=NS) == "2024-06-03T00:00:00Z"

    status, doc = soap(
        ews,
        '<m:UpdateItem ConflictResolution="AutoResolve" MessageDisposition="SaveOnly">'
        f'<m:ItemChanges><t:ItemChange><t:ItemId Id="{item_id}"/><t:Updates>'
        '<t:SetItemField><t:FieldURI FieldURI="item:Flag"/><t:Message><t:Flag>'
        "<t:FlagStatus>Complete</t:FlagStatus><t:CompleteDate>2024-06-02T10:00:00Z</t:CompleteDate>"
        "</t:Flag></t:Message></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges>"
        "</m:UpdateItem>",
    )
    assert status == 200
    assert ews.item(ANN, item_id).flag.status == "Complete"

    status, doc = soap(ews, get_item("not an id", "message:IsRead"))
    message = doc.find(".//m:GetItemResponseMessage", NS)
    assert message is not None and message.get("ResponseClass") == "Error"
    assert message.findtext("m:ResponseCode", namespaces=NS) == "ErrorInvalidIdMalformed"

    ews.busy(times=1, back_off_ms=1500)
    status, doc = soap(ews, get_item(item_id, "message:IsRead"))
    assert status == 500
    detail = doc.find("s:Body/s:Fault/detail", NS)
    assert detail is not None
    assert detail.findtext("e:ResponseCode", namespaces=NS) == "ErrorServerBusy"
    back_off = detail.find("t:MessageXml/t:Value[@Name='BackOffMilliseconds']", NS)
    assert back_off is not None and back_off.text == "1500"


def test_concurrent_clients_on_separate_mailboxes(ews: FakeEws) -> None:
    users = [f"user{n}@contoso.com" for n in range(4)]
    for user in users:
        ews.add_user(user, "pw")
        ews.add_messages(user, "inbox", (mail(n) for n in range(60)))

    def sync(user: str) -> int:
        inbox = basic_account(ews, user, "pw").inbox
        return len(list(inbox.sync_items(max_changes_returned=25, only_fields=["subject"])))

    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(sync, users))

    assert counts == [60] * 4
    assert ews.calls["SyncFolderItems"] == 4 * 3
    assert {r.mailboxes for r in ews.requests} == {(u,) for u in users}


def test_send_and_save_mime_records_sent_mail_and_copy_in_sent_items(ews: FakeEws) -> None:
    account = basic_account(ews)
    sent_folder = account.sent
    list(sent_folder.sync_items(only_fields=["subject"]))  # caught up before sending
    raw = mail(7, "Report").replace(
        b"To: ", b"Cc: carol@example.com\r\nBcc: dan@example.com\r\nTo: "
    )

    result = Message(account=account, folder=sent_folder, mime_content=raw).send_and_save()

    assert result is True  # exchangelib's answer for an empty m:Items (no item id)
    assert ews.sent == [
        SentMail(ANN, raw, "SendAndSaveCopy", (ANN, "carol@example.com", "dan@example.com"))
    ]
    assert ews.sent[0].mime == raw  # byte-identical
    assert ews.calls["CreateItem"] == 1
    assert (ews.requests[-1].operation, ews.requests[-1].mailboxes) == ("CreateItem", (ANN,))
    [copy] = ews.folder_items(ANN, "sentitems")
    assert (copy.subject, copy.is_read, copy.mime) == ("Report 7", True, raw)
    [(kind, item)] = sent_folder.sync_items(only_fields=["subject", "is_read"])
    assert (kind, item.id, item.subject, item.is_read) == ("create", copy.id, "Report 7", True)
    assert ews.folder_items(ANN, "inbox") == []  # sending delivers nothing


def test_send_only_from_properties_records_recipients_without_a_copy(ews: FakeEws) -> None:
    account = basic_account(ews)
    message = Message(
        account=account,
        subject="Hello",
        body="Hi there",
        to_recipients=["x@example.com", "y@example.com"],
        bcc_recipients=["z@example.com"],
    )

    message.send(save_copy=False)

    [sent] = ews.sent
    assert (sent.mailbox, sent.disposition) == (ANN, "SendOnly")
    assert sent.recipients == ("x@example.com", "y@example.com", "z@example.com")
    assert b"Subject: Hello" in sent.mime and b"Hi there" in sent.mime
    assert b"z@example.com" not in sent.mime  # no Bcc header in what was sent
    assert ews.folder_items(ANN, "sentitems") == []
    with pytest.raises(ErrorInvalidRecipients):
        Message(account=account, subject="nobody", body="x").send(save_copy=False)
    assert len(ews.sent) == 1


def test_save_only_returns_the_new_item_id(ews: FakeEws) -> None:
    account = basic_account(ews)
    draft = Message(account=account, folder=account.drafts, subject="Draft", body="x")

    draft.save()

    assert ews.item(ANN, draft.id).folder == "drafts"
    assert ews.item(ANN, draft.id).subject == "Draft"
    assert draft.changekey == ews.item(ANN, draft.id).changekey
    assert ews.sent == []


def test_busy_on_create_item_raises_server_busy(ews: FakeEws) -> None:
    account = basic_account(ews)
    sent_folder = account.sent
    ews.busy(times=1, back_off_ms=2000, operation="CreateItem")

    with pytest.raises(ErrorServerBusy) as raised:
        Message(account=account, folder=sent_folder, mime_content=mail(1)).send_and_save()

    assert raised.value.back_off == pytest.approx(2.0)
    assert ews.requests[-1].status == 500
    assert ews.calls["CreateItem"] == 1
    assert ews.sent == [] and ews.folder_items(ANN, "sentitems") == []
    ews.fail_next("CreateItem", "ErrorSendAsDenied")
    with pytest.raises(ErrorSendAsDenied):
        Message(account=account, folder=sent_folder, mime_content=mail(1)).send_and_save()
    assert ews.sent == []
    Message(account=account, folder=sent_folder, mime_content=mail(1)).send_and_save()
    assert [s.mime for s in ews.sent] == [mail(1)]


class _GarbledMime(CreateItem):  # type: ignore[misc]
    """exchangelib's CreateItem with the MimeContent text replaced, as a buggy encoder would."""

    def get_payload(self, items: Any, **kwargs: Any) -> Any:
        payload = super().get_payload(items, **kwargs)
        payload.find(f".//{{{NS['t']}}}MimeContent").text = "not*base64!"
        return payload


def test_invalid_or_empty_mime_raises_documented_errors(ews: FakeEws) -> None:
    account = basic_account(ews)
    sent_folder = account.sent
    message = Message(account=account, folder=sent_folder, mime_content=mail(1))

    with pytest.raises(ErrorMimeContentInvalidBase64String):
        _GarbledMime(account=account).get(
            items=[message],
            folder=sent_folder,
            message_disposition="SendAndSaveCopy",
            send_meeting_invitations="SendToNone",
        )
    with pytest.raises(ErrorMimeContentInvalid):
        Message(account=account, folder=sent_folder, mime_content=b"").send_and_save()

    assert ews.sent == [] and ews.folder_items(ANN, "sentitems") == []
    assert ews.calls["CreateItem"] == 2


def test_create_item_documented_example_over_raw_soap(ews: FakeEws) -> None:
    status, doc = soap(
        ews,
        '<m:CreateItem MessageDisposition="SendAndSaveCopy">'
        '<m:SavedItemFolderId><t:DistinguishedFolderId Id="drafts"/></m:SavedItemFolderId>'
        "<m:Items><t:Message><t:ItemClass>IPM.Note</t:ItemClass>"
        "<t:Subject>Project Action</t:Subject>"
        '<t:Body BodyType="Text">Priority - Update specification</t:Body>'
        "<t:ToRecipients><t:Mailbox><t:EmailAddress>sschmidt@example.com</t:EmailAddress>"
        "</t:Mailbox></t:ToRecipients><t:IsRead>false</t:IsRead></t:Message></m:Items>"
        "</m:CreateItem>",
    )

    assert status == 200
    message = doc.find(
        "s:Body/m:CreateItemResponse/m:ResponseMessages/m:CreateItemResponseMessage", NS
    )
    assert message is not None and message.get("ResponseClass") == "Success"
    assert message.findtext("m:ResponseCode", namespaces=NS) == "NoError"
    items = message.find("m:Items", NS)
    assert items is not None and len(items) == 0
    assert [(s.disposition, s.recipients) for s in ews.sent] == [
        ("SendAndSaveCopy", ("sschmidt@example.com",))
    ]
    [copy] = ews.folder_items(ANN, "drafts")
    assert (copy.subject, copy.is_read) == ("Project Action", True)

    status, doc = soap(
        ews,
        '<m:CreateItem MessageDisposition="SendOnly"><m:Items><t:Message>'
        "<t:MimeContent>%%%</t:MimeContent></t:Message></m:Items></m:CreateItem>",
    )
    message = doc.find(".//m:CreateItemResponseMessage", NS)
    assert message is not None and message.get("ResponseClass") == "Error"
    code = message.findtext("m:ResponseCode", namespaces=NS)
    assert code == "ErrorMimeContentInvalidBase64String"
    assert message.find("m:Items", NS) is not None


# --- NTLM (on-premises Exchange) ---------------------------------------------------------------


def ntlm_account(fake: FakeEws, user: str, password: str, mailbox: str = ANN) -> Any:
    config = Configuration(
        service_endpoint=fake.url,
        credentials=Credentials(user, password),
        auth_type=NTLM,
        version=Version(build=EXCHANGE_2016),
    )
    return Account(mailbox, config=config, autodiscover=False, access_type=DELEGATE)


@pytest.fixture
def ntlm_ews() -> Iterator[FakeEws]:
    with FakeEws(auth_schemes=("basic", "ntlm")) as fake:
        fake.add_user(ANN, PASSWORD, ntlm="CONTOSO\\ann")
        yield fake
        assert fake.server_errors == []
    close_connections()


def test_ntlm_syncs_and_fetches_mime_on_one_handshake(ntlm_ews: FakeEws) -> None:
    ids = ntlm_ews.add_messages(ANN, "inbox", (mail(n) for n in range(5)))
    account = ntlm_account(ntlm_ews, "CONTOSO\\ann", PASSWORD)

    changes = list(account.inbox.sync_items(max_changes_returned=2, only_fields=["subject"]))
    items = list(account.fetch(ids=[(i, None) for i in ids], only_fields=["mime_content"]))

    assert {item.id for _, item in changes} == set(ids)
    assert [i.mime_content for i in items] == [mail(n) for n in range(5)]
    assert [r.operation for r in ntlm_ews.requests][-4:] == ["SyncFolderItems"] * 3 + ["GetItem"]
    assert {(r.user, r.ntlm_user, r.mailboxes) for r in ntlm_ews.requests} == {
        (ANN, "CONTOSO\\ann", (ANN,))
    }
    # NTLM signs in the keep-alive connection once: the bare request's 401 and the CHALLENGE
    assert (ntlm_ews.ntlm_challenges, ntlm_ews.unauthorized) == (1, 2)
    assert basic_account(ntlm_ews).inbox.total_count == 5  # Basic still works beside NTLM
    assert ntlm_ews.requests[-1].ntlm_user is None


def test_ntlm_wrong_password_or_unknown_account_raises_unauthorized(ntlm_ews: FakeEws) -> None:
    with pytest.raises(UnauthorizedError):
        _ = ntlm_account(ntlm_ews, "CONTOSO\\ann", "wrong").inbox
    assert ntlm_ews.ntlm_challenges == 1  # the AUTHENTICATE leg was refused
    with pytest.raises(UnauthorizedError):
        _ = ntlm_account(ntlm_ews, "CONTOSO\\eve", PASSWORD).inbox
    with pytest.raises(UnauthorizedError):  # the account, not the mailbox address, signs in
        _ = ntlm_account(ntlm_ews, ANN, PASSWORD).inbox
    assert sum(ntlm_ews.calls.values()) == 0
    assert ntlm_ews.requests == []


def test_ntlm_not_offered_by_default(ews: FakeEws) -> None:
    with pytest.raises(UnauthorizedError):
        _ = ntlm_account(ews, ANN, PASSWORD).inbox
    assert ews.ntlm_challenges == 0
    with pytest.raises(ValueError, match="auth_schemes"):
        ews.add_ntlm_user(ANN, "CONTOSO\\ann", PASSWORD)
    with pytest.raises(ValueError, match="auth_schemes"):
        ews.add_user("bob@contoso.com", "pw", ntlm="CONTOSO\\bob")
    assert "bob@contoso.com" not in ews.store.mailboxes


def test_ntlm_only_upn_account_probing_and_impersonation() -> None:
    before = os.environ.get("NTLM_USER_FILE")
    with FakeEws(auth_schemes=("ntlm",)) as fake:
        assert os.environ.get("NTLM_USER_FILE") != before  # pyspnego's acceptor reads it
        fake.add_user(ANN, PASSWORD, ntlm=ANN)  # the UPN form
        fake.add_user("svc@contoso.com", "svc-pw", impersonation=True)
        fake.add_ntlm_user("svc@contoso.com", "CONTOSO\\svc-ews", "svc-pw")
        fake.add_message(ANN, "inbox", mail(1))
        config = Configuration(service_endpoint=fake.url, credentials=Credentials(ANN, PASSWORD))
        account = Account(ANN, config=config, autodiscover=False, access_type=DELEGATE)

        assert account.inbox.total_count == 1
        assert account.protocol.auth_type == NTLM  # from the 401's WWW-Authenticate
        assert fake.requests[-1].ntlm_user == ANN
        service = Configuration(
            service_endpoint=fake.url,
            credentials=Credentials("contoso\\SVC-EWS", "svc-pw"),
            auth_type=NTLM,
            version=Version(build=EXCHANGE_2016),
        )
        impersonating = Account(ANN, config=service, autodiscover=False, access_type=IMPERSONATION)
        assert impersonating.inbox.total_count == 1
        request = fake.requests[-1]
        assert (request.user, request.ntlm_user, request.impersonated) == (
            "svc@contoso.com",
            "contoso\\SVC-EWS",
            ANN,
        )
        basic = httpx.post(fake.url, content=b"<x/>", auth=(ANN, PASSWORD))
        assert (basic.status_code, basic.headers["WWW-Authenticate"]) == (401, "NTLM")
        assert fake.server_errors == []
    close_connections()
    assert os.environ.get("NTLM_USER_FILE") == before


def test_ntlm_authenticates_the_connection_over_raw_http(ntlm_ews: FakeEws) -> None:
    document = (
        f'<soap:Envelope xmlns:soap="{NS["s"]}" xmlns:t="{NS["t"]}" xmlns:m="{NS["m"]}">'
        "<soap:Body><m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>"
        '</m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds>'
        "</m:GetFolder></soap:Body></soap:Envelope>"
    ).encode()
    client = spnego.client(
        "CONTOSO\\ann", PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm
    )

    def post(http: httpx.Client, token: bytes | None = None) -> httpx.Response:
        headers = {"Content-Type": "text/xml; charset=utf-8"}
        if token is not None:
            headers["Authorization"] = "NTLM " + base64.b64encode(token).decode()
        return http.post(ntlm_ews.url, content=document, headers=headers)

    with httpx.Client() as one, httpx.Client() as other:
        first = post(one)
        assert (first.status_code, first.headers["WWW-Authenticate"]) == (
            401,
            'NTLM, Basic realm="127.0.0.1"',
        )
        second = post(one, client.step())
        scheme, challenge = second.headers["WWW-Authenticate"].split(" ")
        assert (second.status_code, scheme) == (401, "NTLM")
        assert post(one, client.step(base64.b64decode(challenge))).status_code == 200
        assert post(one).status_code == 200  # the connection stays signed in
        assert post(other).status_code == 401  # another connection does not
        assert post(other, b"NTLMSSP\x00\x03\x00\x00\x00").status_code == 401  # no NEGOTIATE
    assert [(r.operation, r.ntlm_user) for r in ntlm_ews.requests] == [
        ("GetFolder", "CONTOSO\\ann")
    ] * 2


def test_ntlm_fakes_running_together_share_the_credential_file() -> None:
    before = os.environ.get("NTLM_USER_FILE")
    with (
        FakeEws(auth_schemes=("ntlm",)) as first,
        FakeEws(auth_schemes=("ntlm",)) as second,
    ):
        first.add_user(ANN, PASSWORD, ntlm="CONTOSO\\ann")
        second.add_user("bob@contoso.com", "bob-pw", ntlm="CONTOSO\\bob")
        with pytest.raises(ValueError, match="another password"):
            second.add_user(ANN, "other", ntlm="contoso\\ANN")
        assert ANN not in second.store.mailboxes
        second.add_user(ANN, PASSWORD, ntlm="CONTOSO\\ann")  # the same account is fine

        assert ntlm_account(first, "CONTOSO\\ann", PASSWORD).inbox.name == "Inbox"
        bob = ntlm_account(second, "CONTOSO\\bob", "bob-pw", "bob@contoso.com")
        assert bob.inbox.name == "Inbox"
        first.close()
        close_connections()  # a new connection, a new handshake: bob's line outlives first's
        bob = ntlm_account(second, "CONTOSO\\bob", "bob-pw", "bob@contoso.com")
        assert bob.root.tois.name == "Top of Information Store"
        assert second.ntlm_challenges == 2
        assert first.server_errors == second.server_errors == []
    close_connections()
    assert os.environ.get("NTLM_USER_FILE") == before
