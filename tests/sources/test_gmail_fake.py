"""The fake Gmail (tests/fakes/gmail.py) against a real Dovecot: Gmail's IMAP extensions through
GmailImapProxy and Google's token endpoint through FakeGoogleOAuth and google-auth."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import pytest
import requests
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.fakes.dovecot import Dovecot, available
from tests.fakes.gmail import (
    ACCESS_TOKEN_LIFETIME,
    GMAIL_SCOPE,
    FakeGoogleOAuth,
    GmailImapProxy,
    gm_id,
)

USER, PASSWORD = "ann@example.test", "imap-password"
CLIENT_ID, CLIENT_SECRET = "123-fake.apps.googleusercontent.com", "GOCSPX-fake-secret"


@dataclass
class Gmail:
    oauth: FakeGoogleOAuth
    dovecot: Dovecot
    proxy: GmailImapProxy

    def client(self, login: bool = True) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.proxy.port, ssl=False, timeout=10)
        if login:
            client.login(USER, PASSWORD)
        return client

    def put(self, *messages: bytes, folder: str = "INBOX") -> None:
        """APPEND through the proxy (drop_messages would chown the tree under a live Dovecot)."""
        client = self.client()
        try:
            for raw in messages:
                client.append(folder, raw)
        finally:
            client.logout()


@pytest.fixture
def gmail() -> Iterator[Gmail]:
    if not available():
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    with FakeGoogleOAuth() as oauth:
        oauth.add_client(CLIENT_ID, CLIENT_SECRET)
        dovecot = Dovecot(introspection_url=oauth.introspection_url)
        dovecot.add_user(USER, PASSWORD)  # before start: add_user chowns the running tree
        with dovecot, GmailImapProxy(dovecot.port) as proxy:
            yield Gmail(oauth, dovecot, proxy)
            assert proxy.errors == []
            assert oauth.errors == []


def message(n: int, *, references: str | None = None, body: str = "") -> bytes:
    thread = f"References: {references}\r\nIn-Reply-To: {references}\r\n" if references else ""
    return (
        f"From: customer{n}@example.org\r\nTo: {USER}\r\nSubject: Question {n}\r\n"
        f"Message-ID: <gm-{n}@example.org>\r\n{thread}"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n{body or f'Hello {n}.'}\r\n"
    ).encode()


def refresh(oauth: FakeGoogleOAuth, refresh_token: str) -> google.oauth2.credentials.Credentials:
    credentials = google.oauth2.credentials.Credentials(
        token=None,
        refresh_token=refresh_token,
        token_uri=oauth.token_uri,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    credentials.refresh(google.auth.transport.requests.Request())
    return credentials


class Raw:
    """A bare IMAP line reader over a socket (for what imapclient hides)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")
        self.greeting = self.reader.readline()

    def command(self, line: bytes, tag: bytes | None = None) -> list[bytes]:
        self.sock.sendall(line + b"\r\n")
        tag = tag or line.split(b" ", 1)[0]
        lines = []
        while True:
            got = self.reader.readline()
            assert got, "connection closed"
            lines.append(got)
            if got.startswith(tag + b" "):
                return lines

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def test_every_capability_list_carries_x_gm_ext_1(gmail: Gmail) -> None:
    gmail.put(message(1))
    raw = Raw(gmail.proxy.port)
    try:
        assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
        assert b" X-GM-EXT-1]" in raw.greeting
        untagged, tagged = raw.command(b"a1 CAPABILITY")
        assert untagged.startswith(b"* CAPABILITY IMAP4rev1 ")
        assert untagged.endswith(b" X-GM-EXT-1\r\n") and b"AUTH=XOAUTH2" in untagged
        assert tagged.startswith(b"a1 OK ")
        # having seen CAPABILITY, Dovecot sends the new list untagged after LOGIN
        untagged, done = raw.command(b'a2 LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))
        assert untagged.startswith(b"* CAPABILITY IMAP4rev1 ") and b" MOVE" in untagged
        assert untagged.count(b"X-GM-EXT-1") == 1 and done.startswith(b"a2 OK ")
        # a literal mailbox name is understood (and forwarded) too
        raw.sock.sendall(b"a3 SELECT {5}\r\n")
        assert raw.reader.readline().startswith(b"+ ")
        selected = raw.command(b"INBOX", tag=b"a3")
        assert selected[-1].startswith(b"a3 OK [READ-WRITE]")
        fetched = raw.command(b"a4 FETCH 1 (x-gm-msgid)")
        assert fetched[0] == b"* 1 FETCH (X-GM-MSGID %d)\r\n" % gm_id("<gm-1@example.org>")
    finally:
        raw.close()
    raw = Raw(gmail.proxy.port)
    try:  # otherwise in the tagged OK's response code
        (done,) = raw.command(b"b1 LOGIN %s %s" % (USER.encode(), PASSWORD.encode()))
        assert done.startswith(b"b1 OK [CAPABILITY IMAP4rev1 ") and b" MOVE" in done
        assert done.count(b"X-GM-EXT-1") == 1
    finally:
        raw.close()
    client = gmail.client()
    try:
        capabilities = set(client.capabilities())
        assert {b"X-GM-EXT-1", b"IMAP4REV1", b"IDLE", b"MOVE", b"UIDPLUS"} <= capabilities
        assert client.has_capability("X-GM-EXT-1")
    finally:
        client.logout()
    assert gmail.proxy.commands["LOGIN"] == 4
    assert gmail.proxy.commands["SELECT"] == 1
    assert gmail.proxy.commands["FETCH"] == 1


def test_fetch_returns_bodies_byte_identical_with_gmail_ids(gmail: Gmail) -> None:
    first = message(1, body="Line one.\r\n{12}\r\nnot a literal\r\n* 9 FETCH (X)")
    reply = message(2, references="<gm-1@example.org>")
    other = message(3)
    client = gmail.client()
    try:
        for raw in (first, reply, other):
            client.append("INBOX", raw)
        client.select_folder("INBOX")
        uids = client.search("ALL")
        fetched = client.fetch(uids, [b"BODY.PEEK[]", b"X-GM-MSGID", b"X-GM-THRID"])
        assert [fetched[u][b"BODY[]"] for u in uids] == [first, reply, other]
        root = gm_id("<gm-1@example.org>")
        ids = [(fetched[u][b"X-GM-MSGID"], fetched[u][b"X-GM-THRID"]) for u in uids]
        assert ids == [
            (root, root),
            (gm_id("<gm-2@example.org>"), root),
            (gm_id("gm-3@example.org"),) * 2,
        ]
        assert len({i for i, _ in ids}) == 3 and all(0 < i < 2**63 for i, _ in ids)

        # by sequence number, one attribute, any case: no UID slips in, nothing else changes
        client.use_uid = False
        plain = client.fetch([1, 2], [b"x-gm-thrid", b"FLAGS"])
        client.use_uid = True
        assert sorted(plain) == [1, 2]
        assert [set(plain[n]) for n in (1, 2)] == [{b"X-GM-THRID", b"FLAGS", b"SEQ"}] * 2
        assert [plain[n][b"X-GM-THRID"] for n in (1, 2)] == [root, root]
        # a fetch without X-GM items goes through untouched
        untouched = client.fetch(uids[:1], [b"RFC822.SIZE", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert set(untouched[uids[0]]) == {b"RFC822.SIZE", b"BODY[HEADER.FIELDS (SUBJECT)]", b"SEQ"}
        assert untouched[uids[0]][b"RFC822.SIZE"] == len(first)
    finally:
        client.logout()
    assert gmail.proxy.commands["APPEND"] == 3
    assert gmail.proxy.commands["UID FETCH"] == 2 and gmail.proxy.commands["FETCH"] == 1


def test_a_copy_keeps_its_msgid_and_label_overrides(gmail: Gmail) -> None:
    gmail.put(message(1), message(2, references="<gm-1@example.org>"))
    client = gmail.client()
    try:
        client.create_folder("Old Mail")
        client.select_folder("INBOX")
        inbox = client.search("ALL")
        client.copy(inbox[1:], "Old Mail")
        in_inbox = client.fetch(inbox, [b"X-GM-MSGID", b"X-GM-THRID"])
        client.select_folder("Old Mail")  # a quoted name
        (copy,) = client.search("ALL")
        copied = client.fetch([copy], [b"X-GM-MSGID", b"X-GM-THRID"])
        assert copied[copy][b"X-GM-MSGID"] == in_inbox[inbox[1]][b"X-GM-MSGID"]
        assert copied[copy][b"X-GM-THRID"] == in_inbox[inbox[0]][b"X-GM-MSGID"]

        gmail.proxy.label("Old Mail", copy, msgid=42, thrid=43)
        again = client.fetch([copy], [b"X-GM-MSGID", b"X-GM-THRID"])
        assert (again[copy][b"X-GM-MSGID"], again[copy][b"X-GM-THRID"]) == (42, 43)
        client.select_folder("INBOX")
        back = client.fetch(inbox, [b"X-GM-MSGID"])
        assert back[inbox[1]][b"X-GM-MSGID"] == gm_id("<gm-2@example.org>")
        gmail.proxy.label("inbox", inbox[0], msgid=7, thrid=7)
        assert client.fetch(inbox[:1], [b"X-GM-MSGID"])[inbox[0]][b"X-GM-MSGID"] == 7
    finally:
        client.logout()


def test_xoauth2_with_a_token_refreshed_by_google_auth(gmail: Gmail) -> None:
    oauth = gmail.oauth
    gmail.put(message(1))
    refresh_token = oauth.issue_refresh_token(CLIENT_ID, USER)
    credentials = refresh(oauth, refresh_token)
    assert credentials.token and credentials.token.startswith("ya29.")
    assert credentials.expiry is not None and credentials.valid
    assert oauth.token_requests == 1

    client = IMAPClient("127.0.0.1", port=gmail.proxy.port, ssl=False, timeout=10)
    try:
        client.oauth2_login(USER, credentials.token)
        client.select_folder("INBOX", readonly=True)
        (uid,) = client.search("ALL")
        got = client.fetch([uid], [b"X-GM-MSGID"])
        assert got[uid][b"X-GM-MSGID"] == gm_id("<gm-1@example.org>")
        assert b"X-GM-EXT-1" in client.capabilities()
    finally:
        client.logout()
    assert gmail.proxy.commands["AUTHENTICATE"] == 1 and gmail.proxy.commands["LOGIN"] == 1
    assert oauth.introspections >= 1

    # a token for someone else does not open this mailbox
    stranger = oauth.issue_access_token(CLIENT_ID, "bob@example.test")
    with pytest.raises(LoginError):
        IMAPClient("127.0.0.1", port=gmail.proxy.port, ssl=False, timeout=10).oauth2_login(
            USER, stranger
        )

    oauth.revoke(refresh_token)
    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        refresh(oauth, refresh_token)
    client = IMAPClient("127.0.0.1", port=gmail.proxy.port, ssl=False, timeout=10)
    with pytest.raises(LoginError):
        client.oauth2_login(USER, credentials.token)  # revoked with its refresh token

    fresh = refresh(oauth, oauth.issue_refresh_token(CLIENT_ID, USER)).token
    assert fresh is not None
    oauth.expire_access_tokens()
    client = IMAPClient("127.0.0.1", port=gmail.proxy.port, ssl=False, timeout=10)
    with pytest.raises(LoginError):
        client.oauth2_login(USER, fresh)


def test_token_endpoint_answers_like_google(gmail: Gmail) -> None:
    oauth = gmail.oauth
    refresh_token = oauth.issue_refresh_token(CLIENT_ID, USER)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    ok = requests.post(oauth.token_uri, data=form, timeout=5)
    assert ok.status_code == 200
    assert ok.headers["Content-Type"] == "application/json; charset=utf-8"
    body = ok.json()
    assert set(body) == {"access_token", "expires_in", "scope", "token_type"}
    assert body["expires_in"] == ACCESS_TOKEN_LIFETIME == 3599
    assert (body["scope"], body["token_type"]) == (GMAIL_SCOPE, "Bearer")
    assert oauth.user_of(body["access_token"]) == USER
    introspected = requests.get(oauth.introspection_url + body["access_token"], timeout=5)
    assert introspected.json()["username"] == USER and introspected.json()["active"] is True

    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    no_secret = {k: v for k, v in form.items() if k not in ("client_id", "client_secret")}
    with_basic = requests.post(
        oauth.token_uri, data=no_secret, headers={"Authorization": f"Basic {basic}"}, timeout=5
    )
    assert with_basic.status_code == 200

    bad_secret = requests.post(oauth.token_uri, data={**form, "client_secret": "x"}, timeout=5)
    assert bad_secret.status_code == 401 and bad_secret.json()["error"] == "invalid_client"
    unknown = requests.post(oauth.token_uri, data={**form, "client_id": "nobody"}, timeout=5)
    assert unknown.status_code == 401 and unknown.json() == {
        "error": "invalid_client",
        "error_description": "The OAuth client was not found.",
    }
    wrong_grant = requests.post(oauth.token_uri, data={**form, "grant_type": "password"}, timeout=5)
    assert wrong_grant.status_code == 400
    assert wrong_grant.json()["error"] == "unsupported_grant_type"
    too_wide = requests.post(
        oauth.token_uri, data={**form, "scope": "https://www.googleapis.com/auth/drive"}, timeout=5
    )
    assert too_wide.status_code == 400 and too_wide.json()["error"] == "invalid_scope"

    revoked = requests.post(oauth.revoke_uri, data={"token": refresh_token}, timeout=5)
    assert revoked.status_code == 200
    gone = requests.post(oauth.token_uri, data=form, timeout=5)
    assert gone.status_code == 400 and gone.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    dead = requests.get(oauth.introspection_url + body["access_token"], timeout=5)
    assert dead.status_code == 401 and dead.json() == {"active": False}
    assert oauth.token_requests == 7

    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_client"):
        credentials = google.oauth2.credentials.Credentials(
            token=None,
            refresh_token=oauth.issue_refresh_token(CLIENT_ID, USER),
            token_uri=oauth.token_uri,
            client_id=CLIENT_ID,
            client_secret="wrong",
        )
        credentials.refresh(google.auth.transport.requests.Request())


def test_a_5_mb_message_passes_intact(gmail: Gmail) -> None:
    payload = base64.encodebytes(os.urandom(3_750_000)).replace(b"\n", b"\r\n")
    big = (
        message(5, body="")[:-2]  # headers, blank line, then a body that looks like IMAP in places
        + b"* 1 FETCH (UID 1 BODY[] {99}\r\n"
        + payload
        + b"a1 OK [CAPABILITY IMAP4rev1] done\r\n"
    )
    assert len(big) > 5_000_000
    client = gmail.client()
    try:
        client.append("INBOX", big)
        client.select_folder("INBOX")
        (uid,) = client.search("ALL")
        with_ids = client.fetch([uid], [b"X-GM-MSGID", b"BODY.PEEK[]", b"X-GM-THRID"])[uid]
        assert with_ids[b"BODY[]"] == big
        assert with_ids[b"X-GM-MSGID"] == with_ids[b"X-GM-THRID"] == gm_id("<gm-5@example.org>")
        plain = client.fetch([uid], [b"BODY.PEEK[]"])[uid]
        assert plain[b"BODY[]"] == big and b"X-GM-MSGID" not in plain
    finally:
        client.logout()
