"""Tests of the fake Microsoft Graph itself, driven the way the app drives Graph: httpx, msal,
azure-identity, over real HTTPS on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import msal
import pytest
import requests

from tests.fakes.graph import FakeGraph
from tests.fakes.graph_webhook import WebhookReceiver
from tests.fakes.tls import app_certificate

TENANT = "contoso.onmicrosoft.com"
APP = "11111111-2222-3333-4444-555555555555"
SECRET = "s3cret~value"
ANN = "ann@contoso.com"
GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]

ROOT_MAIL = (
    b"From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@example.com>\r\n"
    b"To: Ann <ann@contoso.com>, bob@contoso.com\r\n"
    b"Cc: carol@contoso.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from the team\r\n"
    b"Date: Mon, 06 May 2024 10:00:00 +0200\r\n"
    b"Message-ID: <root@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello   Ann,\r\nsee attached.\r\n"
    b"--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX--\r\n"
)
REPLY_MAIL = (
    b"From: ann@contoso.com\r\nTo: bjorn@example.com\r\nSubject: Re: hi\r\n"
    b"Message-ID: <reply@contoso.com>\r\nIn-Reply-To: <root@example.com>\r\n"
    b"References: <root@example.com>\r\n\r\nThanks\r\n"
)


def mail(n: int, subject: str = "Note") -> bytes:
    head = f"From: x{n}@example.com\r\nSubject: {subject} {n}\r\nMessage-ID: <{n}@example.com>"
    return f"{head}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture
def fake() -> Iterator[FakeGraph]:
    with FakeGraph(seed=7) as graph:
        graph.add_app(TENANT, APP, SECRET)
        graph.add_user(ANN)
        yield graph
        assert graph.server_errors == []


@pytest.fixture
def client(fake: FakeGraph) -> Iterator[httpx.Client]:
    token = fake.issue_token(TENANT, APP)
    with httpx.Client(
        base_url=fake.graph_url,
        verify=fake.ssl_context(),
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
    ) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


def subscribe(client: httpx.Client, url: str, resource: str, **extra: Any) -> httpx.Response:
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": expiry.isoformat().replace("+00:00", "Z"),
        "clientState": "secret-state",
    } | extra
    return client.post("/subscriptions", json=body, headers={"Prefer": 'IdType="ImmutableId"'})


# --- identity -------------------------------------------------------------------------------------


def test_msal_client_secret_token_works_on_graph(
    fake: FakeGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override Session.verify (psf/requests#3829)
    for name, value in fake.ca_env().items():
        monkeypatch.setenv(name, value)
    app = msal.ConfidentialClientApplication(
        APP,
        client_credential=SECRET,
        authority=f"{fake.login_url}/{TENANT}",
        instance_discovery=False,
        verify=fake.ca_file,
    )
    result = app.acquire_token_for_client(GRAPH_SCOPE)
    assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
    resp = httpx.get(
        f"{fake.graph_url}/users/{ANN}",
        headers={"Authorization": f"Bearer {result['access_token']}"},
        verify=fake.ssl_context(),
    )
    assert resp.status_code == 200
    assert resp.json()["userPrincipalName"] == ANN
    assert fake.requests[-1].tenant == TENANT and fake.requests[-1].client_id == APP

    wrong = msal.ConfidentialClientApplication(
        APP,
        client_credential="nope",
        authority=f"{fake.login_url}/{TENANT}",
        instance_discovery=False,
        verify=fake.ca_file,
    ).acquire_token_for_client(GRAPH_SCOPE)
    assert wrong["error"] == "invalid_client" and 7000215 in wrong["error_codes"]
    assert fake.count(r"/oauth2/v2\.0/token$", status=401) == 1


def test_token_endpoint_errors(fake: FakeGraph) -> None:
    url = f"{fake.login_url}/{TENANT}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": "unknown", "client_secret": "x"}
    form["scope"] = GRAPH_SCOPE[0]
    resp = httpx.post(url, data=form, verify=fake.ssl_context())
    assert resp.status_code == 400 and resp.json()["error"] == "unauthorized_client"
    form |= {"client_id": APP, "client_secret": SECRET, "scope": "User.Read"}
    resp = httpx.post(url, data=form, verify=fake.ssl_context())
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope"
    bad = {"grant_type": "client_credentials", "client_id": APP, "scope": GRAPH_SCOPE[0]}
    bad |= {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    resp = httpx.post(url, data=bad | {"client_assertion": "only.two"}, verify=fake.ssl_context())
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    resp = httpx.get(
        f"{fake.login_url}/other-tenant/v2.0/.well-known/openid-configuration",
        verify=fake.ssl_context(),
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_tenant"


def test_msal_certificate_assertion(fake: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in fake.ca_env().items():
        monkeypatch.setenv(name, value)
    pem, _, thumbprint = app_certificate()
    fake.add_app(TENANT, "cert-app")
    result = msal.ConfidentialClientApplication(
        "cert-app",
        client_credential={"private_key": pem, "thumbprint": thumbprint},
        authority=f"{fake.login_url}/{TENANT}",
        instance_discovery=False,
        verify=fake.ca_file,
    ).acquire_token_for_client(GRAPH_SCOPE)
    assert "access_token" in result, result
    token = fake.tokens.check_bearer(f"Bearer {result['access_token']}")
    assert token.client_id == "cert-app"


def test_managed_identity_with_azure_identity(
    fake: FakeGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    for name, value in fake.msi_env().items():
        monkeypatch.setenv(name, value)
    credential = ManagedIdentityCredential()
    token = credential.get_token("https://graph.microsoft.com/.default")
    assert token.expires_on > dt.datetime.now(dt.UTC).timestamp() + 3000
    resp = httpx.get(
        f"{fake.graph_url}/users/{ANN}/mailFolders/inbox",
        headers={"Authorization": f"Bearer {token.token}"},
        verify=fake.ssl_context(),
    )
    assert resp.status_code == 200
    assert fake.requests[-1].tenant == fake.msi_tenant
    denied = httpx.get(
        fake.msi_endpoint,
        params={"resource": "https://graph.microsoft.com", "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": "wrong"},
    )
    assert denied.status_code == 401
    vault = credential.get_token("https://vault.azure.net/.default")
    resp = httpx.get(
        f"{fake.graph_url}/users/{ANN}",
        headers={"Authorization": f"Bearer {vault.token}"},
        verify=fake.ssl_context(),
    )
    assert resp.status_code == 401 and "audience" in resp.json()["error"]["message"]


def test_graph_demands_a_live_bearer_token(fake: FakeGraph, client: httpx.Client) -> None:
    anonymous = httpx.get(f"{fake.graph_url}/users/{ANN}", verify=fake.ssl_context())
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" in anonymous.headers
    assert client.get(f"/users/{ANN}").status_code == 200
    fake.expire_tokens()
    expired = client.get(f"/users/{ANN}")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_tls_is_real_and_the_ca_works_through_env(
    fake: FakeGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{fake.login_url}/{TENANT}/v2.0/.well-known/openid-configuration"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, trust_env=False)  # certifi alone does not trust the fake CA
    monkeypatch.setenv("SSL_CERT_FILE", fake.ca_file)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_file)
    doc = httpx.get(url).json()
    assert doc["token_endpoint"] == f"{fake.login_url}/{TENANT}/oauth2/v2.0/token"
    assert doc["issuer"].startswith(fake.login_url)
    assert requests.get(url, timeout=5).status_code == 200
    localhost = url.replace("127.0.0.1", "localhost")
    with pytest.warns(DeprecationWarning):  # httpx 0.28 still takes a CA path, with a warning
        assert httpx.get(localhost, verify=fake.ca_file).status_code == 200


# --- messages and folders -------------------------------------------------------------------------


def test_message_fields_come_from_the_mime(fake: FakeGraph, client: httpx.Client) -> None:
    received = dt.datetime(2024, 5, 6, 8, 1, tzinfo=dt.UTC)
    root = fake.add_message(ANN, "inbox", ROOT_MAIL, received=received, categories=["Blue"])
    reply = fake.add_message(ANN, "sentitems", REPLY_MAIL)
    other = fake.add_message(ANN, "inbox", mail(1))
    msg = client.get(f"/users/{ANN}/messages/{root}").json()
    assert msg["@odata.context"].endswith(f"users('{ANN}')/messages/$entity")
    assert msg["subject"] == "Grüße from the team"
    assert msg["from"] == {"emailAddress": {"name": "Björn", "address": "bjorn@example.com"}}
    assert [r["emailAddress"]["address"] for r in msg["toRecipients"]] == [
        "ann@contoso.com",
        "bob@contoso.com",
    ]
    assert msg["ccRecipients"][0]["emailAddress"]["address"] == "carol@contoso.com"
    assert msg["internetMessageId"] == "<root@example.com>"
    assert msg["receivedDateTime"] == "2024-05-06T08:01:00Z"
    assert msg["sentDateTime"] == "2024-05-06T08:00:00Z"
    assert msg["hasAttachments"] is True and msg["bodyPreview"] == "Hello Ann, see attached."
    assert msg["categories"] == ["Blue"] and msg["isRead"] is False
    assert msg["parentFolderId"] == fake.folder_id(ANN, "inbox")
    assert msg["flag"] == {"flagStatus": "notFlagged"}
    assert msg["@odata.etag"].startswith('W/"')
    assert len(base64.b64decode(msg["conversationIndex"])) == 22
    thread = client.get(f"/users/{ANN}/messages/{reply}").json()
    assert thread["conversationId"] == msg["conversationId"]
    assert len(base64.b64decode(thread["conversationIndex"])) == 27
    assert (
        client.get(f"/users/{ANN}/messages/{other}").json()["conversationId"]
        != thread["conversationId"]
    )

    picked = client.get(f"/users('{ANN}')/messages/{root}", params={"$select": "subject,isRead"})
    assert set(picked.json()) == {"@odata.context", "@odata.etag", "id", "subject", "isRead"}
    assert "messages(subject,isRead)" in picked.json()["@odata.context"]
    assert (
        client.get(f"/users/{ANN}/messages/{root}", params={"$select": "nope"}).status_code == 400
    )

    raw = client.get(f"/users/{ANN}/messages/{root}/$value")
    assert raw.status_code == 200 and raw.content == ROOT_MAIL
    assert raw.headers["content-type"].startswith("text/plain")

    by_id = client.get(
        f"/users/{ANN}/messages",
        params={"$filter": "internetMessageId eq '<root@example.com>'", "$select": "id"},
    ).json()["value"]
    assert [m["id"] for m in by_id] == [root]

    missing = client.get(f"/users/{ANN}/messages/AAkALgAAAAAAnope=")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ErrorItemNotFound"
    assert "request-id" in missing.json()["error"]["innerError"]
    assert client.get("/users/nobody@contoso.com/messages").json()["error"]["code"] == (
        "ErrorInvalidUser"
    )


def test_patch_move_delete_keep_the_immutable_id(fake: FakeGraph, client: httpx.Client) -> None:
    mid = fake.add_message(ANN, "inbox", mail(1))
    flag = {
        "flagStatus": "flagged",
        "startDateTime": {"dateTime": "2024-05-06T00:00:00", "timeZone": "UTC"},
        "dueDateTime": {"dateTime": "2024-05-08T00:00:00", "timeZone": "UTC"},
    }
    patched = client.patch(
        f"/users/{ANN}/messages/{mid}",
        json={"isRead": True, "categories": ["Done"], "flag": flag},
    )
    assert patched.status_code == 200
    body = patched.json()
    assert body["isRead"] is True and body["categories"] == ["Done"]
    assert body["flag"]["flagStatus"] == "flagged"
    assert body["flag"]["dueDateTime"] == {
        "dateTime": "2024-05-08T00:00:00.0000000",
        "timeZone": "UTC",
    }
    no_start = {"flag": {"flagStatus": "flagged", "dueDateTime": flag["dueDateTime"]}}
    assert client.patch(f"/users/{ANN}/messages/{mid}", json=no_start).status_code == 400
    unknown = client.patch(f"/users/{ANN}/messages/{mid}", json={"colour": "red"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "RequestBodyRead"
    done = client.patch(f"/users/{ANN}/messages/{mid}", json={"flag": {"flagStatus": "complete"}})
    assert "completedDateTime" in done.json()["flag"]

    moved = client.post(f"/users/{ANN}/messages/{mid}/move", json={"destinationId": "archive"})
    assert moved.status_code == 201
    assert moved.json()["id"] == mid
    assert moved.json()["parentFolderId"] == fake.folder_id(ANN, "archive")
    assert client.get(f"/users/{ANN}/messages/{mid}").status_code == 200

    assert client.delete(f"/users/{ANN}/messages/{mid}").status_code == 204
    assert fake.message(ANN, mid)["parentFolderId"] == fake.folder_id(ANN, "deleteditems")
    assert client.delete(f"/users/{ANN}/messages/{mid}").status_code == 204
    assert client.get(f"/users/{ANN}/messages/{mid}").status_code == 404


def test_mail_folders(fake: FakeGraph, client: httpx.Client) -> None:
    inbox = client.get(f"/users/{ANN}/mailFolders/inbox").json()
    assert inbox["displayName"] == "Inbox" and inbox["id"] == fake.folder_id(ANN, "inbox")
    assert inbox["parentFolderId"] == fake.folder_id(ANN, "msgfolderroot")
    created = client.post(f"/users/{ANN}/mailFolders", json={"displayName": "Clients"})
    assert created.status_code == 201
    again = client.post(f"/users/{ANN}/mailFolders", json={"displayName": "Clients"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "ErrorFolderExists"
    found = client.get(f"/users/{ANN}/mailFolders", params={"$filter": "displayName eq 'Clients'"})
    assert [f["id"] for f in found.json()["value"]] == [created.json()["id"]]
    child = client.post(
        f"/users/{ANN}/mailFolders/{created.json()['id']}/childFolders",
        json={"displayName": "Acme"},
    )
    assert child.status_code == 201
    listed = client.get(f"/users/{ANN}/mailFolders/{created.json()['id']}/childFolders").json()
    assert [f["displayName"] for f in listed["value"]] == ["Acme"]
    assert (
        fake.add_folder(ANN, "Suppliers")
        == client.get(
            f"/users/{ANN}/mailFolders", params={"$filter": "displayName eq 'Suppliers'"}
        ).json()["value"][0]["id"]
    )
    first_page = client.get(f"/users/{ANN}/mailFolders", params={"$top": 3}).json()
    assert len(first_page["value"]) == 3 and "@odata.nextLink" in first_page


def test_delta_rounds(fake: FakeGraph, client: httpx.Client) -> None:
    ids = [fake.add_message(ANN, "inbox", mail(n)) for n in range(5)]
    url: str | None = f"/users/{ANN}/mailFolders/inbox/messages/delta"
    params: dict[str, str] | None = {"$select": "subject,isRead"}
    seen: list[str] = []
    pages = 0
    delta_link = ""
    while url:
        resp = client.get(url, params=params, headers={"Prefer": "odata.maxpagesize=2"})
        assert resp.status_code == 200
        assert resp.headers["Preference-Applied"] == "odata.maxpagesize=2"
        page = resp.json()
        pages += 1
        assert len(page["value"]) <= 2
        for item in page["value"]:
            assert set(item) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"}
            seen.append(item["id"])
        url, params = page.get("@odata.nextLink"), None
        delta_link = page.get("@odata.deltaLink", delta_link)
    assert pages == 3 and sorted(seen) == sorted(ids)
    assert delta_link.startswith(fake.graph_url) and "$deltatoken=" in delta_link

    new = fake.add_message(ANN, "inbox", mail(9))
    fake.update_message(ANN, ids[0], is_read=True)
    fake.move_message(ANN, ids[1], "archive")
    fake.delete_message(ANN, ids[2], permanent=True)
    fake.add_message(ANN, "archive", mail(10))  # another folder: not in this delta
    changes = client.get(delta_link).json()
    by_id = {item["id"]: item for item in changes["value"]}
    assert set(by_id) == {new, ids[0], ids[1], ids[2]}
    assert by_id[ids[0]]["isRead"] is True and set(by_id[ids[0]]) >= {"subject", "isRead"}
    for removed_id in (ids[1], ids[2]):
        assert by_id[removed_id] == {
            "@odata.type": "#microsoft.graph.message",
            "id": removed_id,
            "@removed": {"reason": "deleted"},
        }
    quiet = client.get(changes["@odata.deltaLink"]).json()
    assert quiet["value"] == []

    filtered = client.get(
        f"/users/{ANN}/mailFolders/inbox/messages/delta",
        params={"$filter": "receivedDateTime ge 2999-01-01T00:00:00Z"},
    ).json()
    assert filtered["value"] == []

    fake.expire_delta_tokens()
    gone = client.get(changes["@odata.deltaLink"])
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "syncStateNotFound"


# --- subscriptions and notifications --------------------------------------------------------------


def test_subscription_handshake_and_management(
    fake: FakeGraph, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    resource = f"users/{ANN}/mailFolders('inbox')/messages"
    resp = subscribe(
        client,
        receiver.url("/notify?mailbox=ann"),
        resource,
        lifecycleNotificationUrl=receiver.url("/lifecycle"),
        expirationDateTime="2999-01-01T00:00:00Z",
    )
    assert resp.status_code == 201, resp.text
    sub = resp.json()
    assert sub["@odata.context"].endswith("$metadata#subscriptions/$entity")
    assert sub["resource"] == resource and sub["changeType"] == "created,updated,deleted"
    assert sub["applicationId"] == APP and sub["clientState"] == "secret-state"
    assert sub["includeResourceData"] is False and sub["latestSupportedTlsVersion"] == "v1_2"
    assert sub["lifecycleNotificationUrl"] == receiver.url("/lifecycle")
    expiry = dt.datetime.fromisoformat(sub["expirationDateTime"].replace("0Z", "+00:00"))
    limit = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10_080)
    assert abs((expiry - limit).total_seconds()) < 60
    assert [v.url for v in fake.validations] == [
        receiver.url("/notify?mailbox=ann"),
        receiver.url("/lifecycle"),
    ]
    assert all(" " in t and "+" in t for t in receiver.validation_tokens)

    # The same resource again: a second subscription with its own id, no 409 (current docs).
    dup = subscribe(client, receiver.url("/other"), resource)
    assert dup.status_code == 201 and dup.json()["id"] != sub["id"]
    assert client.delete(f"/subscriptions/{dup.json()['id']}").status_code == 204
    too_long = subscribe(client, receiver.url(), f"users/{ANN}/events", clientState="x" * 129)
    assert too_long.status_code == 400
    short = subscribe(
        client,
        receiver.url(),
        f"users/{ANN}/events",
        expirationDateTime=(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat(),
    )
    short_expiry = dt.datetime.fromisoformat(
        short.json()["expirationDateTime"].replace("0Z", "+00:00")
    )
    assert short_expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=44)

    listed = client.get("/subscriptions").json()["value"]
    assert {s["id"] for s in listed} == {sub["id"], short.json()["id"]}
    renewed = client.patch(
        f"/subscriptions/{sub['id']}", json={"expirationDateTime": "2030-01-01T00:00:00Z"}
    )
    assert renewed.status_code == 200
    assert client.post(f"/subscriptions/{sub['id']}/reauthorize").status_code == 204
    fake.remove_subscription(sub["id"])
    lost = client.patch(
        f"/subscriptions/{sub['id']}", json={"expirationDateTime": "2030-01-01T00:00:00Z"}
    )
    assert lost.status_code == 404
    assert client.delete(f"/subscriptions/{short.json()['id']}").status_code == 204
    assert client.get("/subscriptions").json()["value"] == []


@pytest.mark.parametrize("mode", ["wrong-body", "json", "not-found", "encoded"])
def test_failed_validation_refuses_the_subscription(
    fake: FakeGraph, client: httpx.Client, mode: Any
) -> None:
    with WebhookReceiver(validation=mode) as bad:
        resp = subscribe(client, bad.url(), f"users/{ANN}/messages")
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("Subscription validation request failed")
    assert fake.subscriptions == [] and fake.validations[-1].ok is False


def test_slow_validation_fails(fake: FakeGraph, client: httpx.Client) -> None:
    fake.validation_timeout = 0.2
    with WebhookReceiver(validation="slow", delay=0.5) as slow:
        assert subscribe(client, slow.url(), f"users/{ANN}/messages").status_code == 400


def test_notifications_wait_in_the_outbox_and_have_the_documented_shape(
    fake: FakeGraph, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    inbox_sub = subscribe(
        client, receiver.url("/notify?mailbox=ann"), f"users/{ANN}/mailFolders('Inbox')/messages"
    ).json()
    all_sub = subscribe(client, receiver.url("/all"), f"users/{ANN}/messages").json()
    mid = fake.add_message(ANN, "inbox", mail(1))
    assert receiver.received == [] and len(fake.outbox) == 2
    report = fake.deliver()
    assert report.delivered == 2 and report.statuses == [202, 202]
    first = receiver.received[0]
    assert first.path == "/notify" and first.query == {"mailbox": "ann"}
    note = first.body["value"][0]
    user_id = fake.user_id(ANN)
    assert note == {
        "subscriptionId": inbox_sub["id"],
        "subscriptionExpirationDateTime": note["subscriptionExpirationDateTime"],
        "changeType": "created",
        "resource": f"Users/{user_id}/Messages/{mid}",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": f"Users/{user_id}/Messages/{mid}",
            "@odata.etag": fake.message(ANN, mid)["@odata.etag"],
            "id": mid,
        },
        "clientState": "secret-state",
        "tenantId": TENANT,
    }
    fake.move_message(ANN, mid, "archive")
    fake.set_flag(ANN, mid, "flagged")
    fake.deliver(batch_size=5)
    later = receiver.notifications[2:]
    by_sub = {(n["subscriptionId"], n["changeType"]) for n in later}
    assert by_sub == {(inbox_sub["id"], "deleted"), (all_sub["id"], "updated")}
    assert fake.message(ANN, mid)["flag"]["flagStatus"] == "flagged"


def test_delivery_retries_duplicates_drops_and_lifecycle(
    fake: FakeGraph, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    sub = subscribe(
        client,
        receiver.url(),
        f"users/{ANN}/messages",
        lifecycleNotificationUrl=receiver.url("/lifecycle"),
    ).json()
    fake.add_message(ANN, "inbox", mail(1))
    receiver.script = [500, 503, 202]
    report = fake.deliver()
    assert report.statuses == [500, 503, 202] and report.delivered == 1
    assert [p.attempt for p in report.posts] == [1, 2, 3]

    receiver.script = [500, 500, 500]
    fake.add_message(ANN, "inbox", mail(2))
    failed = fake.deliver()
    assert failed.failed == 1 and failed.requeued == 1 and len(fake.outbox) == 1
    assert fake.deliver().delivered == 1

    for n in range(3, 7):
        fake.add_message(ANN, "inbox", mail(n))
    doubled = fake.deliver(duplicate_rate=1.0, shuffle=True, seed=1, batch_size=3, concurrency=2)
    assert doubled.delivered == 8 and doubled.duplicated == 4
    fake.add_message(ANN, "inbox", mail(8))
    assert fake.deliver(drop_rate=1.0).dropped == 1
    fake.add_message(ANN, "inbox", mail(9))
    before = len(receiver.received)
    assert fake.drop_outbox(send_missed=True) == 1
    missed = receiver.received[before:]
    assert [r.path for r in missed] == ["/lifecycle"]
    assert missed[0].body["value"][0]["lifecycleEvent"] == "missed"

    record = fake.send_lifecycle(sub["id"], "reauthorizationRequired")
    assert record.status == 202 and fake.subscription(sub["id"]).reauthorization_required
    assert client.post(f"/subscriptions/{sub['id']}/reauthorize").status_code == 204
    fake.send_lifecycle(sub["id"], "subscriptionRemoved")
    assert receiver.received[-1].body["value"][0] == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": receiver.received[-1].body["value"][0][
            "subscriptionExpirationDateTime"
        ],
        "tenantId": TENANT,
        "clientState": "secret-state",
        "lifecycleEvent": "subscriptionRemoved",
    }
    assert client.get(f"/subscriptions/{sub['id']}").status_code == 404
    forged = fake.forge(receiver.url("/notify"), {"value": [{"clientState": "evil"}]})
    assert forged.status == 202 and receiver.received[-1].body["value"][0]["clientState"] == "evil"


def test_subscriptions_expire_with_the_clock(
    fake: FakeGraph, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    sub = subscribe(client, receiver.url(), f"users/{ANN}/messages").json()
    fake.advance(10_081 * 60)
    fake.add_message(ANN, "inbox", mail(1))
    assert fake.outbox == []
    fresh = httpx.get(
        f"{fake.graph_url}/subscriptions/{sub['id']}",
        headers={"Authorization": f"Bearer {fake.issue_token(TENANT, APP)}"},
        verify=fake.ssl_context(),
    )
    assert fresh.status_code == 404
    assert client.get("/subscriptions").status_code == 401  # the old token expired too


def test_slow_endpoints_time_out_and_are_retried(fake: FakeGraph, client: httpx.Client) -> None:
    with WebhookReceiver(delay=0.3) as slow:
        subscribe(client, slow.url(), f"users/{ANN}/messages")
        fake.add_message(ANN, "inbox", mail(1))
        report = fake.deliver(timeout=0.1, attempts=2)
        assert report.statuses == [None, None] and report.failed == 1
        assert all(p.elapsed >= 0.1 and p.error for p in report.posts)
        assert len(fake.outbox) == 1 and len(slow.received) == 2  # it did get them, too late


def test_https_notification_urls(fake: FakeGraph, client: httpx.Client) -> None:
    from tests.fakes.tls import shared_tls

    strict = FakeGraph(require_https_notification_url=True, notification_verify=fake.ca_file)
    with strict, WebhookReceiver(tls=shared_tls()) as secure, WebhookReceiver() as plain:
        strict.add_app(TENANT, APP, SECRET)
        strict.add_user(ANN)
        headers = {"Authorization": f"Bearer {strict.issue_token(TENANT, APP)}"}
        with httpx.Client(
            base_url=strict.graph_url, verify=strict.ssl_context(), headers=headers
        ) as c:
            assert subscribe(c, plain.url(), f"users/{ANN}/messages").status_code == 400
            assert subscribe(c, secure.url(), f"users/{ANN}/messages").status_code == 201
        strict.add_message(ANN, "inbox", mail(1))
        assert strict.deliver().delivered == 1
        assert secure.base_url.startswith("https://") and len(secure.notifications) == 1


# --- events ---------------------------------------------------------------------------------------


def test_events_with_extended_properties(
    fake: FakeGraph, client: httpx.Client, receiver: WebhookReceiver
) -> None:
    prop = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name MailfilerRecord"
    subscribe(client, receiver.url(), f"users/{ANN}/events")
    created = client.post(
        f"/users/{ANN}/events",
        json={
            "subject": "Call",
            "start": {"dateTime": "2024-05-06T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2024-05-06T11:00:00", "timeZone": "Europe/Berlin"},
            "singleValueExtendedProperties": [{"id": prop, "value": "rec-1"}],
        },
    )
    assert created.status_code == 201
    event = created.json()
    assert event["end"] == {"dateTime": "2024-05-06T09:00:00.0000000", "timeZone": "UTC"}
    assert "singleValueExtendedProperties" not in event
    expand = f"singleValueExtendedProperties($filter=id eq '{prop}')"
    got = client.get(f"/users/{ANN}/events/{event['id']}", params={"$expand": expand}).json()
    assert got["singleValueExtendedProperties"] == [{"id": prop, "value": "rec-1"}]
    query = f"singleValueExtendedProperties/Any(ep: ep/id eq '{prop}' and ep/value eq 'rec-1')"
    listed = client.get(f"/users/{ANN}/events", params={"$filter": query}).json()["value"]
    assert [e["id"] for e in listed] == [event["id"]]
    patched = client.patch(
        f"/users/{ANN}/events/{event['id']}",
        json={"start": {"dateTime": "2024-05-06T10:30:00", "timeZone": "UTC"}},
    )
    assert patched.json()["start"]["dateTime"] == "2024-05-06T10:30:00.0000000"
    own = fake.add_event(
        ANN,
        "Review",
        dt.datetime(2024, 5, 7, 9, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 7, 10, tzinfo=dt.UTC),
        extended_properties={prop: "rec-2"},
    )
    fake.move_event(
        ANN,
        own,
        dt.datetime(2024, 5, 8, 9, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 8, 10, tzinfo=dt.UTC),
    )
    assert fake.event(ANN, own)["singleValueExtendedProperties"] == [{"id": prop, "value": "rec-2"}]
    assert client.delete(f"/users/{ANN}/events/{event['id']}").status_code == 204
    fake.delete_event(ANN, own)
    fake.deliver()
    changes = [(n["changeType"], n["resourceData"]["@odata.type"]) for n in receiver.notifications]
    assert [c for c, _ in changes] == [
        "created",
        "updated",
        "created",
        "updated",
        "deleted",
        "deleted",
    ]
    assert {t for _, t in changes} == {"#Microsoft.Graph.Event"}


# --- batching, faults and limits ------------------------------------------------------------------


def test_batch(fake: FakeGraph, client: httpx.Client) -> None:
    mid = fake.add_message(ANN, "inbox", mail(1))
    fake.faults.throttle(count=1, path=r"/mailFolders/inbox$", retry_after=0)
    body = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/users/{ANN}/messages/{mid}?$select=subject"},
            {
                "id": "2",
                "method": "PATCH",
                "url": f"users/{ANN}/messages/{mid}",
                "headers": {"Content-Type": "application/json"},
                "body": {"isRead": True},
            },
            {"id": "3", "method": "GET", "url": f"/users/{ANN}/mailFolders/inbox"},
            {"id": "4", "method": "GET", "url": f"/users/{ANN}/messages/{mid}/$value"},
            {
                "id": "5",
                "method": "GET",
                "url": f"/users/{ANN}/messages/missing",
                "dependsOn": ["1"],
            },
            {"id": "6", "method": "GET", "url": f"/users/{ANN}", "dependsOn": ["5"]},
        ]
    }
    resp = client.post("/$batch", json=body)
    assert resp.status_code == 200
    out = {r["id"]: r for r in resp.json()["responses"]}
    assert out["1"]["status"] == 200 and set(out["1"]["body"]) >= {"subject", "id"}
    assert out["2"]["status"] == 200 and out["2"]["body"]["isRead"] is True
    assert out["3"]["status"] == 429 and out["3"]["headers"]["Retry-After"] == "0"
    assert base64.b64decode(out["4"]["body"]) == mail(1)
    assert out["5"]["status"] == 404 and out["6"]["status"] == 424
    assert fake.count(r"/\$batch$") == 1 and fake.count(in_batch=True) == 5  # the 424 never ran

    too_many = {
        "requests": [{"id": str(i), "method": "GET", "url": "/users/" + ANN} for i in range(21)]
    }
    assert client.post("/$batch", json=too_many).status_code == 400
    no_type = {"requests": [{"id": "1", "method": "PATCH", "url": "/x", "body": {}}]}
    assert client.post("/$batch", json=no_type).status_code == 400
    anonymous = httpx.post(f"{fake.graph_url}/$batch", json=body, verify=fake.ssl_context())
    assert anonymous.status_code == 401


def test_fault_injection(fake: FakeGraph, client: httpx.Client) -> None:
    fake.faults.throttle(count=2, retry_after=0, path=r"/mailFolders/")
    statuses = [client.get(f"/users/{ANN}/mailFolders/inbox") for _ in range(3)]
    assert [r.status_code for r in statuses] == [429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "0"
    assert statuses[0].json()["error"]["code"] == "TooManyRequests"
    fake.faults.unavailable(rate=1.0, method="PATCH")
    mid = fake.add_message(ANN, "inbox", mail(1))
    assert client.patch(f"/users/{ANN}/messages/{mid}", json={"isRead": True}).status_code == 503
    assert client.get(f"/users/{ANN}/messages/{mid}").status_code == 200
    fake.faults.clear()
    fake.faults.delay(0.2, count=1)
    slow = client.get(f"/users/{ANN}")
    assert slow.status_code == 200 and slow.elapsed.total_seconds() >= 0.2


def test_mailbox_concurrency_is_tracked_and_limited(fake: FakeGraph) -> None:
    fake.add_user("bob@contoso.com")
    fake.faults.delay(0.5, path=r"/messages$")
    fake.concurrency_limit = 4
    token = fake.issue_token(TENANT, APP)
    results: list[httpx.Response] = []
    lock = threading.Lock()
    barrier = threading.Barrier(7)

    def call(user: str) -> None:
        with httpx.Client(
            verify=fake.ssl_context(), headers={"Authorization": f"Bearer {token}"}
        ) as c:
            # Connect (TLS handshake) before the barrier, so the timed calls overlap even on a
            # loaded machine.
            c.get(f"{fake.graph_url}/users/{urllib.parse.quote(user)}")
            barrier.wait()
            resp = c.get(f"{fake.graph_url}/users/{urllib.parse.quote(user)}/messages")
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=call, args=(ANN,)) for _ in range(6)]
    threads.append(threading.Thread(target=call, args=("bob@contoso.com",)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    throttled = [r for r in results if r.status_code == 429]
    assert len(throttled) == 2 and len(results) == 7
    assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
    assert throttled[0].headers["Retry-After"] == "1"
    assert fake.max_concurrency[ANN] == 5 and fake.max_concurrency["bob@contoso.com"] == 1
    assert fake.count(r"/messages$", status=429) == 2
    assert {r.user for r in fake.requests if r.path.endswith("/messages")} == {
        ANN,
        "bob@contoso.com",
    }
