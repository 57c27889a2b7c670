"""The IMAP source against a real Dovecot (see tests/fakes/dovecot.py) and Azurite."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imapclient import IMAPClient

from shared.cli.azurite import Azurite
from shared.services.context import AppContext, set_context
from shared.services.ingest import ingest_mailbox
from shared.services.mailboxes import enable, mailbox_status
from shared.settings import AppSettings, load_config
from shared.sources.imap.source import ImapSource
from shared.stages import polls
from shared.stages.polls import LEASES, poll_all, poll_one, schedule_polls
from shared.store.cursors import Cursors
from shared.store.leases import release_lease, take_lease
from shared.store.stores import INBOUND, MAILBOXES, POLLS, Stores
from tests.fakes.dovecot import Dovecot, require_dovecot
from tests.fakes.graph import FakeGraph

from ..helpers import filed_keys, local_host, records, timeline_entries

pytestmark = pytest.mark.azurite
USER, PASSWORD = "support@example.test", "imap-password"


def mail(n: int, subject: str | None = None) -> bytes:
    return (
        f"From: customer{n}@example.org\r\nTo: {USER}\r\nSubject: {subject or f'Question {n}'}\r\n"
        f"Message-ID: <imap-{n}@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"Hello {n}.\r\n"
    ).encode()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    require_dovecot()
    with Dovecot(users={USER: PASSWORD}) as server:
        yield server


class World:
    def __init__(self, dovecot: Dovecot, stores: Stores, azurite: Azurite, tmp: Path) -> None:
        self.dovecot, self.stores = dovecot, stores
        self.file = tmp / "mailfiler.yaml"
        self.settings = AppSettings.model_validate(
            {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(self.file)}
        )
        self.host = local_host(stores.queues, visibility_timeout=0)
        self.port = dovecot.port  # where Mailfiler connects (a proxy in front, for Gmail)
        self.configure()

    def configure(
        self,
        extra: str = "",
        folders: str = "[INBOX]",
        types: str = "[{name: case, prefix: CASE}]",
    ) -> None:
        password = "" if "auth: xoauth2" in extra else "    password_setting: IMAP_TEST_PASSWORD\n"
        self.file.write_text(
            f"record_types: {types}\n"
            "mailboxes:\n"
            "  - name: imap\n"
            "    kind: imap\n"
            "    host: 127.0.0.1\n"
            f"    port: {self.port}\n"
            "    tls: none\n"
            f"    username: {USER}\n"
            f"{password}"
            f"    folders: {folders}\n"
            "    record_type: case\n"
            f"{extra}"
        )
        self.ctx = AppContext(self.settings, load_config(self.file), self.file.parent, self.stores)
        set_context(self.ctx)

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.dovecot.port, ssl=False)
        client.login(USER, PASSWORD)
        return client

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw in messages:
                client.append(folder, raw)

    def poll(self) -> str:
        return poll_all(self.ctx, datetime.now(UTC))["imap"]


@pytest.fixture
def world(
    dovecot: Dovecot,
    stores: Stores,
    azurite: Azurite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    monkeypatch.setenv("IMAP_TEST_PASSWORD", PASSWORD)
    yield World(dovecot, stores, azurite, tmp_path)
    set_context(None)


def test_first_sync_files_each_message_once_and_an_idle_poll_is_cheap(world: World) -> None:
    world.append([mail(i) for i in range(30)])
    assert world.poll() == "queued 30"
    world.host.drain()
    assert len(records(world.stores)) == 30 and len(filed_keys(world.stores)) == 30
    source = world.ctx.source("imap")
    assert isinstance(source, ImapSource)
    summary = ingest_mailbox(
        world.stores,
        "imap",
        source,
        now=datetime.now(UTC),
        cursors=Cursors(world.stores, "imap", "imap"),
    )
    assert summary.queued == 0
    assert source.commands <= 5, source.commands  # LOGIN, STATUS, LOGOUT
    world.append([mail(30)])
    assert world.poll() == "queued 1"
    world.host.drain()
    assert len(timeline_entries(world.stores)) == 31
    # BODY.PEEK: polling never marked anything read
    with world.client() as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["SEEN"]) == []


def test_a_new_uidvalidity_files_nothing_twice(world: World) -> None:
    world.configure(folders="[Support]")
    world.append([mail(i) for i in range(5)], folder="Support")
    assert world.poll() == "queued 5"
    world.host.drain()
    with world.client() as client:  # the folder is rebuilt: same mail, new UIDVALIDITY
        client.rename_folder("Support", "Support-old")
        client.create_folder("Support")
    world.append([mail(i) for i in range(5)], folder="Support")
    assert world.poll() == "queued 5"
    world.host.drain()
    assert len(records(world.stores)) == 5
    assert len(timeline_entries(world.stores)) == 5


def test_a_server_killed_mid_fetch_loses_nothing(world: World) -> None:
    world.append([mail(i) for i in range(250)])
    seen = 0

    def kill_midway(step: int) -> None:
        nonlocal seen
        seen += step
        if seen == 120:
            world.dovecot.kill()

    source = world.ctx.source("imap")
    summary = ingest_mailbox(
        world.stores,
        "imap",
        source,
        now=datetime.now(UTC),
        progress=kill_midway,
        cursors=Cursors(world.stores, "imap", "imap"),
    )
    assert 0 < summary.queued < 250 and summary.failed and not summary.complete
    world.dovecot.start()
    assert world.poll() == f"queued {250 - summary.queued}"
    world.host.drain()
    entries = timeline_entries(world.stores, ["MessageKey"])
    assert len(entries) == 250 and len({e["MessageKey"] for e in entries}) == 250


def test_mail_is_marked_read_and_moved_only_after_filing(world: World) -> None:
    folder = "Aufträge"  # UTF-7 on the wire
    target = "Erledigt/Geprüft"
    world.configure(
        extra=f"    after_filing: {{mark_read: true, move_to: {target}}}\n", folders=f"[{folder}]"
    )
    world.append([mail(1), mail(2)], folder=folder)
    assert world.poll() == "queued 2"
    with world.client() as client:  # queued, not filed: untouched
        client.select_folder(folder, readonly=True)
        assert len(client.search(["UNSEEN"])) == 2
    world.host.drain()
    assert len(records(world.stores)) == 2
    with world.client() as client:
        assert client.select_folder(folder, readonly=True)[b"EXISTS"] == 0
        client.select_folder(target.replace("/", "."), readonly=True)  # Dovecot: "." nests
        assert len(client.search(["SEEN"])) == 2


def test_a_wrong_password_fails_this_mailbox_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAP_TEST_PASSWORD", "wrong")
    assert world.poll() == "failed"
    status = mailbox_status(world.ctx)["imap"]
    assert status["status"] == "failing" and "IMAP server 127.0.0.1" in str(status["last_error"])
    assert "wrong" not in str(status["last_error"])
    assert threading.active_count() >= 1


def test_polls_fan_out_under_a_lease_on_their_interval_and_stop_after_failures(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.configure(extra="    poll_minutes: 5\n    disable_after_failures: 2\n")
    ctx = world.ctx
    world.append([mail(i) for i in range(3)])
    now = datetime.now(UTC)
    assert schedule_polls(ctx, now) == {"imap": "scheduled"}
    world.host.drain()  # the `polls` queue's function polls, the stages file
    assert len(records(world.stores)) == 3
    assert schedule_polls(ctx, now + timedelta(minutes=1)) == {"imap": "not due"}
    # A poll in progress elsewhere holds the lease: this one steps aside.
    leases = world.stores.table(MAILBOXES)
    assert take_lease(leases, LEASES, "imap", "another-worker", now, timedelta(minutes=15))
    assert poll_one(ctx, "imap", now) == "busy (another poll runs)"
    release_lease(leases, LEASES, "imap", "another-worker")
    monkeypatch.setenv("IMAP_TEST_PASSWORD", "wrong")
    assert [poll_one(ctx, "imap", now) for _ in range(2)] == ["failed", "failed"]
    status = mailbox_status(ctx)["imap"]
    assert status["status"] == "disabled" and "2 failed polls" in str(status["disabled_reason"])
    assert schedule_polls(ctx, now + timedelta(minutes=10)) == {"imap": "disabled after failures"}
    monkeypatch.setenv("IMAP_TEST_PASSWORD", PASSWORD)
    enable(ctx, "imap")
    assert schedule_polls(ctx, now + timedelta(minutes=10)) == {"imap": "scheduled"}


def test_a_backfill_longer_than_a_poll_goes_on_at_once_and_waits_for_a_long_backlog(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At most max_per_poll a poll; the rest follows in polls of its own as the stages catch
    # up, not a poll interval (an hour here) later.
    world.configure(extra="    poll_minutes: 60\n    max_per_poll: 4\n")
    world.append([mail(i) for i in range(10)])
    assert schedule_polls(world.ctx, datetime.now(UTC)) == {"imap": "scheduled"}
    world.host.drain()
    assert len(records(world.stores)) == 10 and len(filed_keys(world.stores)) == 10
    assert world.host.processed[POLLS] == 3  # 4 + 4 + 2
    # A continuation that finds too many inbound messages waiting is put back, delayed.
    monkeypatch.setattr(polls, "BACKLOG_BEFORE_MORE", 1)
    world.append([mail(10)])
    world.stores.queues.send_bytes(INBOUND, b"{}")  # one waiting (never mapped here)
    body = b'{"v": 1, "mailbox": "imap", "continues": true}'
    assert polls.handle(world.ctx, body, datetime.now(UTC)) == "backfill waits for the backlog"
    assert world.stores.queues.depth(POLLS) == 1
    assert world.stores.queues.peek(POLLS) == []  # delayed, not visible yet
    world.stores.queues.clear(INBOUND)
    assert polls.handle(world.ctx, body, datetime.now(UTC)) == "queued 1"


def test_xoauth2_with_an_app_token_from_entra(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGraph() as entra:
        for name, value in entra.ca_env().items():
            monkeypatch.setenv(name, value)
        entra.add_app("contoso", "imap-app", "app-secret")
        entra.grant_imap("imap-app", USER)  # the service principal's mailbox permission
        monkeypatch.setenv("IMAP_APP_SECRET", "app-secret")
        introspection = entra.msi_endpoint.replace("/msi/token", "/introspect?token=")
        with Dovecot(introspection_url=introspection, users={USER: PASSWORD}) as server:
            world = World(server, stores, azurite, tmp_path)
            world.append([mail(1)])
            oauth = (
                "    auth: xoauth2\n"
                "    oauth: {tenant_id: contoso, client_id: imap-app,"
                " client_secret_setting: IMAP_APP_SECRET,"
                f" login_endpoint: '{entra.login_url}', scope: '{entra.base_url}/.default'}}\n"
            )
            world.configure(extra=oauth)
            try:
                assert world.poll() == "queued 1"
                world.host.drain()
                assert len(records(stores)) == 1
                entra.grant_imap("imap-app", "someone-else@example.test")
                assert world.poll() == "failed"  # the token no longer opens this mailbox
                assert "IMAP server 127.0.0.1" in str(
                    mailbox_status(world.ctx)["imap"]["last_error"]
                )
            finally:
                set_context(None)


def test_a_shared_mailbox_opened_with_a_delegate_s_credentials(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_dovecot()
    monkeypatch.setenv("IMAP_TEST_PASSWORD", "agent-password")
    with Dovecot(master_users={"agent@example.test": "agent-password"}) as server:
        server.add_user(USER, PASSWORD)  # the shared mailbox; its own password is not used
        world = World(server, stores, azurite, tmp_path)
        world.append([mail(1), mail(2)])
        world.configure(extra=f"    shared_mailbox: {USER}\n")
        world.file.write_text(
            world.file.read_text().replace(
                f"    username: {USER}\n", "    username: agent@example.test\n"
            )
        )
        world.ctx = AppContext(world.settings, load_config(world.file), tmp_path, stores)
        set_context(world.ctx)
        try:
            assert world.poll() == "queued 2"
            world.host.drain()
            assert len(records(stores)) == 2
            log = (server.dir / "dovecot.log").read_text()
            assert f"Login: user=<{USER}>, method=PLAIN" in log  # acting as the shared mailbox
            monkeypatch.setenv("IMAP_TEST_PASSWORD", "wrong")
            world.append([mail(3)])
            assert world.poll() == "failed"  # the delegate's password is what counts
        finally:
            set_context(None)


def test_mail_from_the_sent_folder_is_ours_and_our_address_in_the_inbox_is_flagged(
    world: World,
) -> None:
    world.configure(
        folders="[INBOX, Sent]",
        extra=f"    addresses: [{USER}]\n    authserv_id: mx.example.test\n",
    )
    ours = (
        f"From: Support <{USER}>\r\nTo: customer1@example.org\r\nSubject: Re: Question 1\r\n"
        "Message-ID: <ours-1@example.test>\r\nIn-Reply-To: <imap-1@example.org>\r\n\r\nOn it.\r\n"
    ).encode()
    spoof = (
        "Authentication-Results: evil.example; dmarc=pass header.from=example.test\r\n"
        f"From: =?utf-8?b?0KHQu9GD0LbQsdCw?= <{USER}>\r\nTo: customer1@example.org\r\n"
        "Subject: Re: Question 1\r\nMessage-ID: <spoof-1@evil.example>\r\n"
        "In-Reply-To: <imap-1@example.org>\r\n\r\nPlease log in at http://evil.example\r\n"
    ).encode()
    with world.client() as client:
        client.create_folder("Sent")
    world.append([mail(1)])
    assert world.poll() == "queued 1"
    world.host.drain()
    world.append([ours], folder="Sent")  # the IMAP Sent folder: a default sent folder name
    world.append([spoof])
    assert world.poll() == "queued 2"
    world.host.drain()
    entries = {
        bytes.fromhex(e["MessageKey"]).decode(): e
        for e in timeline_entries(world.stores, ["MessageKey", "Direction", "Folder", "Flag"])
    }
    assert len(records(world.stores)) == 1 and len(entries) == 3
    assert entries["ours-1@example.test"]["Direction"] == "out"
    assert entries["ours-1@example.test"]["Folder"] == "Sent"
    assert entries["ours-1@example.test"].get("Flag") is None
    assert entries["spoof-1@evil.example"]["Direction"] == "in"
    assert entries["spoof-1@evil.example"]["Flag"].startswith(f"From claims our address {USER}")
