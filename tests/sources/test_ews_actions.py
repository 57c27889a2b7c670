"""EWS after-filing actions at the source: folders created once under a race and cached,
retries after busy answers and lost connections that never act twice, a user's move never
reverted, the server's back-off read in both of Microsoft's forms, and the requests a filed
mail costs. Unmodified exchangelib against the fake EWS over real HTTP (a cutting proxy in
front of it where the network must fail)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from exchangelib import close_connections  # type: ignore[import-untyped]

from shared.cli.azurite import Azurite
from shared.core.config import EwsMailbox, parse_config
from shared.core.contracts import MailboxAction
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings
from shared.sources.base import SourceBusy, SourceUnavailable
from shared.sources.ews.connection import account_for
from shared.sources.ews.source import EwsSource
from shared.stages.polls import poll_one, schedule_polls
from shared.store.backoff import backoff_until
from shared.store.stores import MESSAGES, POLLS, Stores
from tests.fakes.cutting_proxy import CuttingProxy
from tests.fakes.ews import FakeEws

from ..helpers import filed_keys, local_host, records

pytestmark = pytest.mark.azurite
ANN, PASSWORD, SETTING = "ann@contoso.com", "Sommer-2024!", "EWS_ACTIONS_PASSWORD"
TARGET = "Mailfiler/Erledigt/Δικαστήριο"  # a path, non-Latin at the end
FILE = [
    MailboxAction(action="mark_read"),
    MailboxAction(action="categorize", category="Mailfiler"),
    MailboxAction(action="move", folder=TARGET),
]


def mail(n: int) -> bytes:
    return (
        f"From: kunde{n}@example.org\r\nTo: {ANN}\r\nSubject: Frage {n}\r\n"
        f"Message-ID: <ews-act-{n}@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        f"\r\nHallo {n}.\r\n"
    ).encode()


def config_yaml(url: str, extra: str = "") -> str:
    return (
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        "  - name: ews\n"
        "    kind: ews\n"
        f"    endpoint: {url}\n"
        f"    email: {ANN}\n"
        "    auth: basic\n"
        f"    username: {ANN}\n"
        f"    password_setting: {SETTING}\n"
        "    access_type: delegate\n"
        "    record_type: case\n"
        f"{extra}"
    )


def mailbox_at(url: str) -> EwsMailbox:
    mailbox = parse_config(config_yaml(url)).mailbox("ews")
    assert isinstance(mailbox, EwsMailbox)
    return mailbox


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEws]:
    monkeypatch.setenv(SETTING, PASSWORD)
    with FakeEws(read_flag_changes=True) as server:
        server.add_user(ANN, PASSWORD)
        yield server
        assert server.server_errors == []
    close_connections()


def source(fake: FakeEws, url: str | None = None) -> EwsSource:
    """A new source, as each poll or action of a worker makes one."""
    return EwsSource(mailbox_at(url or fake.url))


def in_target(fake: FakeEws) -> list[str]:
    return [i.subject for i in fake.folder_items(ANN, TARGET)]


def test_two_filings_racing_to_create_the_folder_both_move_into_one_folder(
    fake: FakeEws, stores: Stores
) -> None:
    first, second = fake.add_messages(ANN, "inbox", [mail(1), mail(2)])
    # Another worker creates the last part between our FindFolder (not there) and our
    # CreateFolder: ours answers ErrorFolderExists, and theirs is read back and used.
    parent = "Mailfiler/Erledigt"
    fake.add_folder(ANN, "Mailfiler")
    fake.add_folder(ANN, "Erledigt", "Mailfiler")

    def other_worker() -> None:
        fake.add_folder(ANN, "Δικαστήριο", parent)

    fake.before("CreateFolder", other_worker)
    results = source(fake).apply(first, FILE)
    assert [r.done for r in results] == [True, True, True]
    assert fake.calls["CreateFolder"] == 1  # ours, answered ErrorFolderExists
    results = source(fake).apply(second, FILE)
    assert all(r.done for r in results)
    assert sorted(in_target(fake)) == ["Frage 1", "Frage 2"]
    children = fake.store.children(fake.store.find_folder(ANN, parent))
    assert [f.name for f in children] == ["Δικαστήριο"]


def test_filings_in_threads_create_the_folder_once(fake: FakeEws, stores: Stores) -> None:
    ids = fake.add_messages(ANN, "inbox", [mail(n) for n in range(6)])
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def file(item: str) -> None:
        try:
            barrier.wait()
            assert all(r.done for r in source(fake).apply(item, FILE))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=file, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(in_target(fake)) == len(ids)
    mailfiler = fake.store.children(fake.store.find_folder(ANN, "msgfolderroot"))
    assert [f.name for f in mailfiler].count("Mailfiler") == 1
    done = fake.store.children(fake.store.find_folder(ANN, "Mailfiler"))
    assert [f.name for f in done] == ["Erledigt"]


def test_a_path_is_resolved_once_and_a_filed_mail_costs_three_requests(
    fake: FakeEws, stores: Stores
) -> None:
    ids = fake.add_messages(ANN, "inbox", [mail(n) for n in range(4)])
    source(fake).apply(ids[0], FILE)  # resolves and creates the path
    assert fake.calls["CreateFolder"] == 3
    fake.calls.clear()
    for item in ids[1:]:
        assert all(r.done for r in source(fake).apply(item, FILE))
    # Per mail: GetItem (state and folder), one UpdateItem (read + category), one MoveItem.
    assert dict(fake.calls) == {"GetItem": 3, "UpdateItem": 3, "MoveItem": 3}
    assert len(in_target(fake)) == 4
    moved = fake.folder_items(ANN, TARGET)
    assert all(i.is_read and list(i.categories) == ["Mailfiler"] for i in moved)


def test_one_account_per_mailbox_and_process(fake: FakeEws) -> None:
    mailbox = mailbox_at(fake.url)
    assert account_for(mailbox) is account_for(mailbox_at(fake.url))
    other = mailbox.model_copy(update={"email": "legal@contoso.com"})
    assert account_for(other) is not account_for(mailbox)


def test_a_deleted_target_folder_is_found_gone_and_made_again(
    fake: FakeEws, stores: Stores
) -> None:
    first, second = fake.add_messages(ANN, "inbox", [mail(1), mail(2)])
    source(fake).apply(first, FILE)
    fake.delete_folder(ANN, "Mailfiler/Erledigt")  # by the user, with what it held
    results = source(fake).apply(second, FILE)
    assert [r.done for r in results] == [True, True, True]
    assert in_target(fake) == ["Frage 2"]


def test_a_mail_already_in_the_target_is_not_moved(fake: FakeEws, stores: Stores) -> None:
    (first,) = fake.add_messages(ANN, "inbox", [mail(1)])
    source(fake).apply(first, FILE)
    (there,) = fake.folder_items(ANN, TARGET)
    fake.calls.clear()
    results = source(fake).apply(there.id, FILE)
    assert [r.detail for r in results][-1] == f"already in {TARGET}"
    assert fake.calls["MoveItem"] == 0 and fake.exists(ANN, there.id)


def test_a_user_s_move_back_is_never_reverted(fake: FakeEws, stores: Stores) -> None:
    (item,) = fake.add_messages(ANN, "inbox", [mail(1)])
    assert all(r.done for r in source(fake).apply(item, FILE))
    (filed,) = fake.folder_items(ANN, TARGET)
    back = fake.move(ANN, filed.id, "inbox")  # the user puts it back, unread
    fake.mark_read(ANN, back, False)
    fake.calls.clear()
    for _ in range(3):  # duplicate deliveries of the same work, retries
        results = source(fake).apply(item, FILE)
        assert not any(r.done for r in results)
        assert "left where it is" in results[0].detail
    state = fake.item(ANN, back)
    assert state.folder == "inbox" and not state.is_read
    assert in_target(fake) == []
    assert fake.calls["MoveItem"] == 0 and fake.calls["UpdateItem"] == 0


@pytest.mark.parametrize("in_message", [False, True], ids=["fault", "response-message"])
@pytest.mark.parametrize("operation", ["GetItem", "UpdateItem", "MoveItem"])
def test_a_busy_server_s_back_off_is_read_and_the_retry_acts_once(
    fake: FakeEws, stores: Stores, in_message: bool, operation: str
) -> None:
    (item,) = fake.add_messages(ANN, "inbox", [mail(1)])
    source(fake)._folder(TARGET, create=True)  # resolved before: the busy call is ours
    fake.busy(back_off_ms=62_500, operation=operation, in_message=in_message)
    with pytest.raises(SourceBusy) as caught:
        source(fake).apply(item, FILE)
    assert caught.value.retry_after == 62.5  # the server's value, not exchangelib's 10 s
    assert all(r.done for r in source(fake).apply(item, FILE))
    assert fake.calls["MoveItem"] == 1 + (operation == "MoveItem")  # the busy one did nothing
    (moved,) = fake.folder_items(ANN, TARGET)
    assert moved.is_read and list(moved.categories) == ["Mailfiler"]


@pytest.mark.parametrize("in_message", [False, True], ids=["fault", "response-message"])
def test_a_busy_sync_gives_the_server_s_back_off(
    fake: FakeEws, stores: Stores, in_message: bool
) -> None:
    fake.add_messages(ANN, "inbox", [mail(1)])
    fake.busy(back_off_ms=4_000, operation="SyncFolderItems", in_message=in_message)
    with pytest.raises(SourceBusy) as caught:
        source(fake).poll({})
    assert caught.value.retry_after == 4.0
    fake.busy(back_off_ms=None, operation="SyncFolderItems", in_message=in_message)
    with pytest.raises(SourceBusy) as caught:
        source(fake).poll({})
    assert caught.value.retry_after == 60.0  # named no value: our minute, not 10 s
    assert len(source(fake).poll({}).refs) == 1


def test_a_lost_answer_is_retried_without_a_second_move(fake: FakeEws, stores: Stores) -> None:
    (item,) = fake.add_messages(ANN, "inbox", [mail(1)])
    with CuttingProxy(fake.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/EWS/Exchange.asmx"
        source(fake, url)._folder(TARGET, create=True)
        # The server moves the mail, but the connection drops before its answer arrives.
        proxy.cut(b"MoveItem", deliver=True)
        with pytest.raises(SourceUnavailable):
            source(fake, url).apply(item, FILE)
        assert len(proxy.matched) == 1
        results = source(fake, url).apply(item, FILE)  # the retry: nothing left to do
    assert not any(r.done for r in results)
    assert fake.calls["MoveItem"] == 1 and len(in_target(fake)) == 1


def test_a_request_lost_on_the_way_is_retried_and_done_once(fake: FakeEws, stores: Stores) -> None:
    (item,) = fake.add_messages(ANN, "inbox", [mail(1)])
    with CuttingProxy(fake.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/EWS/Exchange.asmx"
        proxy.cut(b"UpdateItem", deliver=False)
        with pytest.raises(SourceUnavailable):
            source(fake, url).apply(item, FILE)
        assert fake.calls["UpdateItem"] == 0 and fake.item(ANN, item).folder == "inbox"
        assert all(r.done for r in source(fake, url).apply(item, FILE))
    assert fake.calls["UpdateItem"] == 1 and fake.calls["MoveItem"] == 1
    (moved,) = fake.folder_items(ANN, TARGET)
    assert moved.is_read and list(moved.categories) == ["Mailfiler"]


@pytest.mark.parametrize("in_message", [False, True], ids=["soap-fault", "response-message"])
def test_no_request_before_the_back_off_ends_through_the_poll(
    fake: FakeEws, stores: Stores, azurite: Azurite, tmp_path: Path, in_message: bool
) -> None:
    fake.add_messages(ANN, "inbox", [mail(1), mail(2)])
    settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    ctx = AppContext(settings, parse_config(config_yaml(fake.url)), tmp_path, stores)
    set_context(ctx)
    try:
        fake.busy(back_off_ms=3_000, operation="SyncFolderItems", in_message=in_message)
        assert poll_one(ctx, "ews", datetime.now(UTC)) == "busy; again in 3 s"
        busy_at = max(r.at for r in fake.requests)
        # The back-off is the mailbox's, for every stage: a timer tick inside it polls nothing.
        assert backoff_until(stores, "ews", datetime.now(UTC)) is not None
        assert schedule_polls(ctx, datetime.now(UTC))["ews"].startswith("backing off")
        assert stores.queues.depth(POLLS) == 1  # the poll again, delayed by the back-off
        local_host(stores.queues, visibility_timeout=0).drain()
        after = [r for r in fake.requests if r.at > busy_at]
        assert after and min(r.at for r in after) >= busy_at + 3.0 - 0.05
        assert len(records(stores)) == 2
        assert time.monotonic() >= busy_at + 3.0
    finally:
        set_context(None)


def test_a_watched_folder_deleted_and_made_again_is_found_again(
    fake: FakeEws, stores: Stores
) -> None:
    fake.add_folder(ANN, "Fälle", "inbox")
    mailbox = parse_config(config_yaml(fake.url, "    folders: [Inbox/Fälle]\n")).mailbox("ews")
    assert isinstance(mailbox, EwsMailbox)
    assert list(EwsSource(mailbox).poll({}).refs) == []
    fake.delete_folder(ANN, "Inbox/Fälle")
    with pytest.raises(OSError, match="ErrorFolderNotFound"):
        EwsSource(mailbox).poll({})
    fake.add_folder(ANN, "Fälle", "inbox")  # the user makes it again: a new id
    fake.add_messages(ANN, "Inbox/Fälle", [mail(1)])
    assert len(EwsSource(mailbox).poll({}).refs) == 1


def test_through_the_pipeline_a_user_s_move_back_and_unread_are_never_undone(
    fake: FakeEws, stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    """Filed and moved once by the actions stage; the user moves the mail back to the inbox
    and marks it unread; the next syncs list it there again (a new item id): a sighting of a
    filed mail, and no action runs on it again."""
    (item,) = fake.add_messages(ANN, "inbox", [mail(7)])
    extra = f"    after_filing: {{mark_read: true, move_to: {TARGET}}}\n"
    settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    ctx = AppContext(settings, parse_config(config_yaml(fake.url, extra)), tmp_path, stores)
    set_context(ctx)
    host = local_host(stores.queues, visibility_timeout=0)
    try:
        poll_one(ctx, "ews", datetime.now(UTC))
        host.drain()
        (moved,) = fake.folder_items(ANN, TARGET)
        assert moved.is_read and fake.calls["MoveItem"] == 1
        back = fake.move(ANN, moved.id, "inbox")  # the user, in Outlook
        fake.mark_read(ANN, back, is_read=False)
        for _ in range(2):
            poll_one(ctx, "ews", datetime.now(UTC))
            host.drain()
        assert fake.calls["MoveItem"] == 1 and in_target(fake) == []
        (inbox,) = fake.folder_items(ANN, "inbox")
        assert inbox.is_read is False
        assert len(records(stores)) == 1
        (key,) = filed_keys(stores)
        seen = [
            r["Folder"] for r in stores.table(MESSAGES).partition(key) if r["RowKey"][:2] == "s-"
        ]
        assert "inbox" in [str(f).lower() for f in seen], seen  # the user's move is recorded
    finally:
        set_context(None)
    assert item
