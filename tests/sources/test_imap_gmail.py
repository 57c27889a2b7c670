"""Gmail through IMAP: XOAUTH2 with a refresh token (google-auth against a fake Google token
endpoint) and Gmail's X-GM-THRID as the conversation, against a real Dovecot made to look like
Gmail by tests/fakes/gmail.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.services.context import set_context
from shared.services.mailboxes import mailbox_status
from shared.store import imap_tokens
from shared.store.stores import IMAP_STATE, Stores
from tests.fakes.dovecot import Dovecot, require_dovecot
from tests.fakes.gmail import FakeGoogleOAuth, GmailImapProxy, gm_id

from ..helpers import records, timeline_entries
from .test_imap import PASSWORD, USER, World, mail

pytestmark = pytest.mark.azurite
CLIENT_ID, CLIENT_SECRET = "123-fake.apps.googleusercontent.com", "GOCSPX-fake-secret"


class GmailWorld(World):
    oauth: FakeGoogleOAuth
    proxy: GmailImapProxy


def gmail_oauth(world: GmailWorld) -> str:
    return (
        "    auth: xoauth2\n"
        f"    oauth: {{provider: google, client_id: '{CLIENT_ID}',"
        " client_secret_setting: GMAIL_CLIENT_SECRET,"
        " refresh_token_setting: GMAIL_REFRESH_TOKEN,"
        f" token_endpoint: '{world.oauth.token_uri}'}}\n"
    )


@pytest.fixture
def gmail(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GmailWorld]:
    require_dovecot()
    with FakeGoogleOAuth() as oauth:
        oauth.add_client(CLIENT_ID, CLIENT_SECRET)
        monkeypatch.setenv("GMAIL_CLIENT_SECRET", CLIENT_SECRET)
        monkeypatch.setenv("GMAIL_REFRESH_TOKEN", oauth.issue_refresh_token(CLIENT_ID, USER))
        server = Dovecot(introspection_url=oauth.introspection_url, users={USER: PASSWORD})
        with server, GmailImapProxy(server.port) as proxy:
            world = GmailWorld(server, stores, azurite, tmp_path)
            world.oauth, world.proxy, world.port = oauth, proxy, proxy.port
            world.configure(extra=gmail_oauth(world))
            yield world
            assert proxy.errors == [] and oauth.errors == []
    set_context(None)


def test_a_refresh_token_opens_gmail_once_per_token_lifetime(gmail: GmailWorld) -> None:
    gmail.append([mail(1)])
    assert gmail.poll() == "queued 1"
    gmail.append([mail(2)])
    assert gmail.poll() == "queued 1"
    assert gmail.oauth.token_requests == 1  # the access token is reused while it lives
    assert gmail.proxy.command_count("AUTHENTICATE") == 2
    gmail.host.drain()
    assert len(records(gmail.stores)) == 2
    row = imap_tokens.load(gmail.stores.table(IMAP_STATE), "imap")
    assert row is not None and "RefreshedAt" in row and "Cache" not in row
    assert mailbox_status(gmail.ctx)["imap"]["warnings"] == []


def test_a_revoked_refresh_token_fails_the_poll_with_what_to_do(gmail: GmailWorld) -> None:
    gmail.append([mail(1)])
    assert gmail.poll() == "queued 1"
    gmail.oauth.revoke(os.environ["GMAIL_REFRESH_TOKEN"])  # also ends its access tokens
    gmail.append([mail(2)])
    assert gmail.poll() == "failed"  # the server refuses the access token minted from it
    assert gmail.poll() == "failed"  # a new one is asked for, and Google says no
    error = str(mailbox_status(gmail.ctx)["imap"]["last_error"])
    assert "invalid_grant" in error and "GMAIL_REFRESH_TOKEN" in error, error


def test_gmail_threads_file_follow_ups_without_references(gmail: GmailWorld) -> None:
    gmail.append([mail(1)])
    assert gmail.poll() == "queued 1"
    gmail.host.drain()
    (case,) = records(gmail.stores)
    # A follow-up whose client dropped References and changed the subject: Gmail still
    # threads it (X-GM-THRID), and so does Mailfiler.
    follow_up = mail(2, subject="Another thing")
    gmail.append([follow_up])
    with gmail.client() as client:
        client.select_folder("INBOX", readonly=True)
        uid = max(client.search(["ALL"]))
    thread = gm_id("<imap-1@example.org>")
    gmail.proxy.label("INBOX", uid, gm_id("<imap-2@example.org>"), thread)
    assert gmail.poll() == "queued 1"
    gmail.host.drain()
    assert len(records(gmail.stores)) == 1
    entries = timeline_entries(gmail.stores, ["PartitionKey"])
    assert len(entries) == 2 and {e["PartitionKey"] for e in entries} == {f"case-{case['RowKey']}"}


def test_a_message_under_two_watched_labels_is_fetched_once(gmail: GmailWorld) -> None:
    gmail.configure(extra=gmail_oauth(gmail), folders="[INBOX, All Mail]")
    gmail.append([mail(1), mail(2)])
    gmail.append([mail(1), mail(3)], folder="All Mail")  # mail 1 has both labels
    assert gmail.poll() == "queued 3"
    gmail.host.drain()
    assert len(records(gmail.stores)) == 3
    assert len(timeline_entries(gmail.stores)) == 3
