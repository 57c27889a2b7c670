"""The EWS source: unmodified exchangelib against the fake EWS server (tests/fakes/ews.py) over
real HTTP, with the pipeline on Azurite."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from exchangelib import close_connections  # type: ignore[import-untyped]

from shared.cli.azurite import Azurite
from shared.core.config import EwsMailbox
from shared.services.context import AppContext, set_context
from shared.services.mailboxes import mailbox_status
from shared.services.replies import reply_from_record
from shared.settings import AppSettings, load_config
from shared.sources.ews.connection import account_for
from shared.stages.polls import poll_one
from shared.store.stores import POLLS, Stores
from tests.fakes.ews import FakeEws
from tests.fakes.graph import FakeGraph
from tests.fakes.tls import shared_tls

from ..helpers import filed_keys, local_host, records, timeline_entries

pytestmark = pytest.mark.azurite
ANN, PASSWORD = "ann@contoso.com", "Sommer-2024!"
TYPES = "[{name: case, prefix: CASE}, {name: task, prefix: TASK}]"


def mail(n: int, subject: str | None = None) -> bytes:
    return (
        f"From: customer{n}@example.org\r\nTo: {ANN}\r\nSubject: {subject or f'Question {n}'}\r\n"
        f"Message-ID: <ews-{n}@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"Hello {n}.\r\n"
    ).encode()


class EwsWorld:
    def __init__(self, fake: FakeEws, stores: Stores, azurite: Azurite, tmp: Path) -> None:
        self.fake, self.stores = fake, stores
        self.file = tmp / "mailfiler.yaml"
        self.settings = AppSettings.model_validate(
            {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(self.file)}
        )
        self.host = local_host(stores.queues, visibility_timeout=0)
        self.configure()

    def configure(self, extra: str = "") -> None:
        self.file.write_text(
            f"record_types: {TYPES}\n"
            "mailboxes:\n"
            "  - name: ews\n"
            "    kind: ews\n"
            f"    endpoint: {self.fake.url}\n"
            f"    email: {ANN}\n"
            "    auth: basic\n"
            f"    username: {ANN}\n"
            "    password_setting: EWS_TEST_PASSWORD\n"
            "    access_type: delegate\n"
            "    record_type: case\n"
            f"{extra}"
        )
        self.ctx = AppContext(self.settings, load_config(self.file), self.file.parent, self.stores)
        set_context(self.ctx)

    def poll(self) -> str:
        return poll_one(self.ctx, "ews", datetime.now(UTC))

    def tasks(self) -> list[dict[str, object]]:
        return [r for r in records(self.stores) if r["PartitionKey"] == "task"]


@pytest.fixture
def world(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EwsWorld]:
    monkeypatch.setenv("EWS_TEST_PASSWORD", PASSWORD)
    with FakeEws(read_flag_changes=True) as fake:  # IsRead changes as Exchange reports them
        fake.add_user(ANN, PASSWORD)
        yield EwsWorld(fake, stores, azurite, tmp_path)
        assert fake.server_errors == []
    close_connections()
    set_context(None)


# Sized to prove it, not to be big (was 2,000 items at the defaults, 10 minutes): pages of 20
# and a cap of 50 per poll (defaults 100 and 500: the same code with smaller numbers) are both
# crossed before the sync state breaks and again after it (the resync lists all over 3 polls).
ITEMS, CAP, PAGE = 120, 50, 20


@pytest.mark.slow
def test_items_over_many_pages_file_once_even_when_the_sync_state_breaks(
    world: EwsWorld,
) -> None:
    world.configure(f"    max_per_poll: {CAP}\n    page_size: {PAGE}\n")
    world.fake.add_messages(ANN, "inbox", (mail(n) for n in range(ITEMS)))
    assert world.poll() == f"queued {CAP}; more to come"
    # The server forgets the sync state mid-way: the folder starts again from scratch.
    world.fake.corrupt_sync_states()
    world.host.drain(timeout=900)  # the `polls` messages carry on page after page
    keys = filed_keys(world.stores)
    entries = timeline_entries(world.stores, ["MessageKey"])
    assert len(records(world.stores)) == ITEMS and len(keys) == ITEMS
    assert len(entries) == ITEMS and len({e["MessageKey"] for e in entries}) == ITEMS
    pages = [c.changes for c in world.fake.sync_calls]
    assert max(pages) == PAGE and sum(pages) >= ITEMS + CAP  # the resync listed all again
    assert world.poll() == "queued 0"  # caught up: one SyncFolderItems, nothing new
    assert world.fake.sync_calls[-1].changes == 0


def test_server_busy_reschedules_the_poll_after_the_back_off(world: EwsWorld) -> None:
    world.fake.add_messages(ANN, "inbox", [mail(1), mail(2)])
    world.fake.busy(times=1, back_off_ms=2000, operation="SyncFolderItems")
    started = time.monotonic()
    assert world.poll() == "busy; again in 2 s"
    assert time.monotonic() - started < 1.5  # returned at once: no sleeping in the function
    assert world.stores.queues.depth(POLLS) == 1  # the poll, again, after the back-off
    assert world.stores.queues.receive(POLLS, max_messages=1, visibility_timeout=1) == []
    status = mailbox_status(world.ctx)["ews"]
    assert status["consecutive_failures"] == 0 and status["status"] != "failing"
    world.host.drain()
    assert len(records(world.stores)) == 2
    assert time.monotonic() - started >= 2.0


def test_bad_credentials_are_a_failure_not_busy(
    world: EwsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EWS_TEST_PASSWORD", "wrong")
    world.fake.add_messages(ANN, "inbox", [mail(1)])
    assert world.poll() == "failed"
    status = mailbox_status(world.ctx)["ews"]
    assert status["status"] == "failing" and "refused the login (401)" in str(status["last_error"])
    assert "EWS_TEST_PASSWORD" in str(status["fix"])
    assert "wrong" not in str(status["last_error"])
    assert world.stores.queues.depth(POLLS) == 0  # not retried as if busy


def test_actions_run_only_after_filing(world: EwsWorld) -> None:
    world.configure(
        "    after_filing: {mark_read: true, move_to: Inbox/Done, category: Mailfiler}\n"
    )
    (item,) = world.fake.add_messages(ANN, "inbox", [mail(1)])
    assert world.poll() == "queued 1"
    state = world.fake.item(ANN, item)
    assert not state.is_read and state.folder == "inbox"  # queued, not filed: untouched
    world.host.drain()
    assert len(records(world.stores)) == 1
    assert not world.fake.exists(ANN, item)  # moved: EWS gave it a new id
    (moved,) = world.fake.folder_items(ANN, "Inbox/Done")
    assert moved.is_read and list(moved.categories) == ["Mailfiler"]


def test_flags_become_tasks_and_calendar_items_move_their_dates(world: EwsWorld) -> None:
    world.configure("    tasks: {record_type: task}\n    calendar: {}\n")
    (item,) = world.fake.add_messages(ANN, "inbox", [mail(1)])
    assert world.poll() == "queued 1"
    world.host.drain()
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    due = datetime(2026, 12, 3, 17, tzinfo=UTC)
    world.fake.set_flag(ANN, item, "Flagged", start=start, due=due)
    assert world.poll() == "queued 0"
    world.host.drain()
    (task,) = world.tasks()
    assert task["Status"] == "new" and task["F_Parent"] == "CASE-1"
    assert datetime.fromisoformat(str(task["F_Start"])).date() == start.date()
    assert datetime.fromisoformat(str(task["F_Due"])).date() == due.date()

    # A calendar item that names the task: moving it moves the task's dates.
    event = world.fake.add_event(ANN, "Call back [TASK-1]", start, start + timedelta(hours=1))
    assert world.poll() == "queued 0"
    world.host.drain()
    later = start + timedelta(days=7)
    world.fake.move_event(ANN, event, later, later + timedelta(hours=2))
    assert world.poll() == "queued 0"
    world.host.drain()
    (task,) = world.tasks()
    assert datetime.fromisoformat(str(task["F_Start"])) == later
    assert datetime.fromisoformat(str(task["F_Due"])) == later + timedelta(hours=2)

    world.fake.set_flag(ANN, item, "Complete")
    assert world.poll() == "queued 0"
    world.host.drain()
    (task,) = world.tasks()
    assert task["Status"] == "closed"


def test_app_only_oauth_with_impersonation_over_https(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGraph() as entra:
        for name, value in entra.ca_env().items():
            monkeypatch.setenv(name, value)
        entra.add_app("contoso", "ews-app", "app-secret")
        monkeypatch.setenv("EWS_APP_SECRET", "app-secret")
        audience = entra.base_url.rstrip("/")

        def check_bearer(token: str) -> bool:  # what Exchange Online checks of the token
            with entra.tokens.lock:
                found = entra.tokens.tokens.get(token)
            return found is not None and found.audience == audience and found.kind == "app"

        with FakeEws(tls=True, check_bearer=check_bearer, read_flag_changes=True) as fake:
            fake.add_user(ANN)
            fake.add_messages(ANN, "inbox", [mail(1), mail(2)])
            world = EwsWorld(fake, stores, azurite, tmp_path)
            oauth = (
                "    oauth: {tenant_id: contoso, client_id: ews-app,"
                " client_secret_setting: EWS_APP_SECRET,"
                f" login_endpoint: '{entra.login_url}', scope: '{entra.base_url}/.default'}}\n"
            )
            world.file.write_text(
                world.file.read_text()
                .replace("    auth: basic\n", "    auth: oauth\n")
                .replace(f"    username: {ANN}\n    password_setting: EWS_TEST_PASSWORD\n", "")
                .replace("    access_type: delegate\n", "    access_type: impersonation\n" + oauth)
            )
            world.ctx = AppContext(
                world.settings, load_config(world.file), world.file.parent, world.stores
            )
            set_context(world.ctx)
            try:
                assert fake.url.startswith("https://")
                assert world.poll() == "queued 2"
                world.host.drain()
                assert len(records(stores)) == 2
                acted = [r for r in fake.requests if r.operation == "SyncFolderItems"]
                assert acted and all(r.user is None and r.impersonated == ANN for r in acted)
                assert fake.unauthorized == 0
            finally:
                close_connections()
                set_context(None)


def test_a_reply_from_a_record_is_sent_and_saved_by_ews(world: EwsWorld) -> None:
    world.fake.add_messages(ANN, "inbox", [mail(1)])
    assert world.poll() == "queued 1"
    world.host.drain()
    (record,) = records(world.stores)
    reply_from_record(world.stores, world.ctx.config, record, {"body": "On it."}, "agent")
    world.host.drain()
    (sent,) = world.fake.sent
    assert sent.disposition == "SendAndSaveCopy" and sent.recipients == ("customer1@example.org",)
    assert b"[CASE-1]" in sent.mime and b"In-Reply-To: <ews-1@example.org>" in sent.mime
    (copy,) = world.fake.folder_items(ANN, "sentitems")
    assert copy.mime == sent.mime
    directions = sorted(e["Direction"] for e in timeline_entries(world.stores, ["Direction"]))
    assert directions == ["in", "out"]


def test_an_internal_ca_is_trusted_for_its_host_only_and_checked_by_default(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EWS_TEST_PASSWORD", PASSWORD)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)  # only the system's CAs, as in Azure
    with FakeEws(tls=True, read_flag_changes=True) as fake:
        fake.add_user(ANN, PASSWORD)
        fake.add_messages(ANN, "inbox", [mail(1)])
        world = EwsWorld(fake, stores, azurite, tmp_path)
        try:
            assert world.poll() == "failed"  # a certificate from an unknown CA
            error = str(mailbox_status(world.ctx)["ews"]["last_error"])
            assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error
            world.configure(f"    ca_bundle: '{shared_tls().ca_file}'\n")
            assert world.poll() == "queued 1"
        finally:
            close_connections()
            set_context(None)


def test_mailboxes_of_one_service_account_share_one_connection_pool(world: EwsWorld) -> None:
    world.fake.add_user("legal@contoso.com")
    world.fake.grant_access("legal@contoso.com", ANN)
    world.configure()
    first = world.ctx.config.mailbox("ews")
    assert isinstance(first, EwsMailbox)
    second = first.model_copy(update={"name": "legal", "email": "legal@contoso.com"})
    ann, legal = account_for(first), account_for(second)
    assert ann.protocol is legal.protocol  # one exchangelib protocol: one pool of connections
    assert legal.inbox.total_count == 0 and ann.inbox.total_count == 0


def test_ntlm_for_on_premises_exchange(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EWS_TEST_PASSWORD", PASSWORD)
    with FakeEws(auth_schemes=("ntlm",), read_flag_changes=True) as fake:
        fake.add_user(ANN, PASSWORD, ntlm="CONTOSO\\ann")
        fake.add_messages(ANN, "inbox", [mail(1)])
        world = EwsWorld(fake, stores, azurite, tmp_path)
        world.file.write_text(
            world.file.read_text()
            .replace("    auth: basic\n", "    auth: ntlm\n")
            .replace(f"    username: {ANN}\n", "    username: CONTOSO\\ann\n")
        )
        world.ctx = AppContext(world.settings, load_config(world.file), tmp_path, stores)
        set_context(world.ctx)
        try:
            assert world.poll() == "queued 1"
            world.host.drain()
            assert len(records(stores)) == 1
            users = {r.ntlm_user for r in fake.requests if r.operation == "SyncFolderItems"}
            assert users == {"CONTOSO\\ann"}
        finally:
            close_connections()
            set_context(None)


def test_sent_items_are_ours_and_our_address_in_the_inbox_is_flagged(world: EwsWorld) -> None:
    world.configure(f"    folders: [inbox, sentitems]\n    addresses: [{ANN}]\n")
    ours = (
        f"From: {ANN}\r\nTo: customer1@example.org\r\nSubject: Re: Question 1\r\n"
        "Message-ID: <ours-1@example.org>\r\nIn-Reply-To: <ews-1@example.org>\r\n\r\nOn it.\r\n"
    ).encode()
    spoof = ours.replace(b"ours-1@example.org", b"spoof-1@evil.example")
    world.fake.add_messages(ANN, "inbox", [mail(1)])
    world.poll()
    world.host.drain()
    world.fake.add_messages(ANN, "sentitems", [ours])
    world.fake.add_messages(ANN, "inbox", [spoof])
    world.poll()
    world.host.drain()
    entries = {
        bytes.fromhex(e["MessageKey"]).decode(): e
        for e in timeline_entries(world.stores, ["MessageKey", "Direction", "Flag"])
    }
    assert len(records(world.stores)) == 1 and len(entries) == 3
    assert entries["ours-1@example.org"]["Direction"] == "out"
    assert entries["ours-1@example.org"].get("Flag") is None
    assert entries["spoof-1@evil.example"]["Direction"] == "in"
    # No authserv_id configured: nothing can vouch for our address arriving from outside.
    assert "names no authserv_id" in entries["spoof-1@evil.example"]["Flag"]
