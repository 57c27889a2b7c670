"""Sources read and act; they do not enqueue (issue 19 point 3). A source's poll returns what it
saw (a `Sighting`: ids, flag and calendar changes, the next cursor) and touches no storage; the
poll stage sends the changes to `task-changes` first and saves the cursor after, so a worker
that dies between the two sends the changes again and loses none. Real Dovecot, the fake EWS
server over real HTTP, and Azurite; folder names and subjects in non-Latin scripts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.header import Header
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.transport import HttpTransport
from exchangelib import close_connections  # type: ignore[import-untyped]
from imapclient import IMAPClient

from shared.cli.azurite import Azurite
from shared.core.config import EwsMailbox, GraphMailbox, ImapMailbox, parse_config
from shared.core.contracts import EventChange, FlagChange
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings, load_config
from shared.sources.base import Sighting
from shared.sources.ews.source import EwsSource
from shared.sources.imap.source import ImapSource
from shared.sources.registry import graph_source
from shared.stages.polls import poll_one
from shared.store.account import RequestCounter, StorageSettings, transport_type
from shared.store.cursors import Cursors
from shared.store.queues import decode
from shared.store.stores import IMAP_STATE, QUEUES, TABLES, TASK_CHANGES, Stores
from tests.fakes.dovecot import Dovecot, available
from tests.fakes.ews import FakeEws

from .graph_setup import USER as GRAPH_USER
from .graph_setup import GraphWorld, graph_world

__all__ = ["graph_world"]

pytestmark = pytest.mark.azurite
USER, PASSWORD = "support@example.test", "imap-password"
ANN, EWS_PASSWORD = "ann@contoso.com", "Sommer-2024!"
FOLDER = "Заявки"  # a watched folder with a Cyrillic name (modified UTF-7 on the wire)
FLAGGED = b"\\Flagged"
SUBJECTS = ["お問い合わせ 1", "طلب 2", "Запрос 3"]


def mail(n: int, domain: str = "example.org") -> bytes:
    subject = SUBJECTS[(n - 1) % len(SUBJECTS)]
    return (
        f"From: customer{n}@{domain}\r\nTo: support@example.test\r\n"
        f"Subject: {Header(subject, 'utf-8').encode()}\r\n"
        f"Message-ID: <sighting-{n}@{domain}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"Hello {n}.\r\n"
    ).encode()


def untouched(stores: Stores, counter: RequestCounter) -> None:
    """No storage request since the counter was reset, and storage as the fixture left it."""
    assert counter.total == 0, counter.snapshot()
    assert all(stores.queues.depth(q) == 0 for q in QUEUES)
    assert all(list(stores.table(t).all()) == [] for t in TABLES)
    counter.reset()  # the checks' own requests


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if not available():
        pytest.fail("dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")
    server = Dovecot()
    server.add_user(USER, PASSWORD)
    with server:
        yield server


def imap_yaml(port: int) -> str:
    return (
        "record_types: [{name: case, prefix: CASE}, {name: task, prefix: TASK}]\n"
        "mailboxes:\n"
        "  - name: imap\n"
        "    kind: imap\n"
        "    host: 127.0.0.1\n"
        f"    port: {port}\n"
        "    tls: none\n"
        f"    username: {USER}\n"
        "    password_setting: SIGHTING_PASSWORD\n"
        f"    folders: [{FOLDER}]\n"
        "    record_type: case\n"
        "    tasks: {record_type: task}\n"
    )


def imap_client(dovecot: Dovecot) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
    client.login(USER, PASSWORD)
    return client


def set_flag(dovecot: Dovecot, n: int, on: bool) -> None:
    with imap_client(dovecot) as client:
        client.select_folder(FOLDER)
        (uid,) = client.search(["HEADER", "Message-ID", f"<sighting-{n}@example.org>"])
        (client.add_flags if on else client.remove_flags)([uid], [FLAGGED], silent=True)


def deliver(dovecot: Dovecot, numbers: range, flagged: frozenset[int] = frozenset()) -> None:
    with imap_client(dovecot) as client:
        if not client.folder_exists(FOLDER):
            client.create_folder(FOLDER)
        for n in numbers:
            client.append(FOLDER, mail(n), flags=[FLAGGED] if n in flagged else [])


def flag(n: int, status: str, mailbox: str = "imap") -> FlagChange:
    return FlagChange(mailbox=mailbox, message_id=f"<sighting-{n}@example.org>", status=status)


def imap_poll(mailbox: ImapMailbox, cursor: Mapping[str, Any]) -> tuple[Sighting, list[bytes]]:
    """One poll as the poll stage runs it, without the stage: list, read all, close."""
    source = ImapSource(mailbox, PASSWORD)
    try:
        seen = source.poll(cursor)
        return seen, [source.read(i).raw for i in seen.refs]
    finally:
        source.close()


def test_an_imap_poll_returns_what_it_saw_and_leaves_no_message_and_no_row(
    dovecot: Dovecot, stores: Stores, counter: RequestCounter
) -> None:
    mailbox = parse_config(imap_yaml(dovecot.port)).mailbox("imap")
    assert isinstance(mailbox, ImapMailbox)
    deliver(dovecot, range(1, 4), flagged=frozenset({2}))
    counter.reset()

    first, raws = imap_poll(mailbox, {})
    assert raws == [mail(n) for n in (1, 2, 3)]
    assert first.incremental and not first.more
    assert list(first.changes) == [flag(2, "flagged")]  # flagged on arrival
    assert set(first.cursor) == {FOLDER} and first.cursor[FOLDER]["LastUid"] == 3
    untouched(stores, counter)

    # The same cursor again: nothing new. Then the user moves the flag from 2 to 3.
    again, raws = imap_poll(mailbox, first.cursor)
    assert raws == [] and list(again.changes) == []
    set_flag(dovecot, 2, on=False)
    set_flag(dovecot, 3, on=True)
    moved, raws = imap_poll(mailbox, {**first.cursor, **again.cursor})
    assert raws == []
    assert sorted(moved.changes, key=lambda c: c.model_dump_json()) == sorted(
        [flag(2, "notFlagged"), flag(3, "flagged")], key=lambda c: c.model_dump_json()
    )
    untouched(stores, counter)

    # What the poll stage does with it: the cursor rows round-trip, the Cyrillic name kept.
    Cursors(stores, "imap", "imap").save(moved.cursor, datetime.now(UTC))
    loaded = Cursors(stores, "imap", "imap").load()
    assert set(loaded) == {FOLDER}
    assert loaded[FOLDER]["LastUid"] == 3 and loaded[FOLDER]["Flagged"] == "3"
    assert list(imap_poll(mailbox, loaded)[0].changes) == []


def ews_yaml(url: str) -> str:
    return (
        "record_types: [{name: case, prefix: CASE}, {name: task, prefix: TASK}]\n"
        "mailboxes:\n"
        "  - name: ews\n"
        "    kind: ews\n"
        f"    endpoint: {url}\n"
        f"    email: {ANN}\n"
        "    auth: basic\n"
        f"    username: {ANN}\n"
        "    password_setting: SIGHTING_EWS_PASSWORD\n"
        "    access_type: delegate\n"
        "    record_type: case\n"
        "    tasks: {record_type: task}\n"
        "    calendar: {}\n"
    )


def test_an_ews_poll_returns_what_it_saw_and_leaves_no_message_and_no_row(
    stores: Stores, counter: RequestCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTING_EWS_PASSWORD", EWS_PASSWORD)
    with FakeEws(read_flag_changes=True) as fake:
        fake.add_user(ANN, EWS_PASSWORD)
        mailbox = parse_config(ews_yaml(fake.url)).mailbox("ews")
        assert isinstance(mailbox, EwsMailbox)
        items = fake.add_messages(ANN, "inbox", [mail(n, "contoso.com") for n in (1, 2)])
        start = datetime(2026, 12, 1, 9, tzinfo=UTC)
        event = fake.add_event(ANN, "Перезвонить [TASK-1]", start, start + timedelta(hours=1))
        counter.reset()
        try:
            source = EwsSource(mailbox)
            first = source.poll({})
            assert [source.read(i).raw for i in first.refs] == [
                mail(n, "contoso.com") for n in (1, 2)
            ]
            assert first.incremental and not first.more
            (created,) = first.changes
            assert isinstance(created, EventChange)
            assert (created.event_id, created.change, created.subject) == (
                event,
                "created",
                "Перезвонить [TASK-1]",
            )
            assert {f.lower() for f in first.cursor} == {"inbox", "calendar"}
            untouched(stores, counter)

            fake.set_flag(ANN, items[1], "Flagged")
            later = EwsSource(mailbox).poll(first.cursor)
            assert list(later.refs) == []
            (flagged,) = later.changes
            assert flagged == FlagChange(
                mailbox="ews", message_id="<sighting-2@contoso.com>", status="flagged"
            )
            assert later.cursor["inbox"]["SyncState"] != first.cursor["inbox"]["SyncState"]
            untouched(stores, counter)
        finally:
            close_connections()


class WorkerDied(Exception):
    """Not a storage error (no SDK retries it): the process is gone at this very point."""


class DiesSavingTheCursor(RequestCounter):
    """Storage as a worker sees it that is killed as it writes a cursor row: reads and every
    other write reach Azurite; the write to `ImapState` never leaves the process."""

    def transport(self, service: str, session: Any = None) -> HttpTransport[Any, Any]:
        class _Dying(transport_type(session)):  # type: ignore[misc]
            def send(self, request: Any, **kwargs: Any) -> Any:
                if request.method != "GET" and f"/{IMAP_STATE}(" in request.url:
                    raise WorkerDied(f"killed before {request.method} {IMAP_STATE}")
                return super().send(request, **kwargs)

        return _Dying(session=session, session_owner=session is None)


def task_changes(stores: Stores) -> list[FlagChange]:
    return [decode(body, FlagChange) for body in stores.queues.peek(TASK_CHANGES)]


def test_a_worker_killed_between_the_changes_and_the_cursor_sends_them_again(
    dovecot: Dovecot,
    stores: Stores,
    azurite: Azurite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIGHTING_PASSWORD", PASSWORD)
    file = tmp_path / "mailfiler.yaml"
    file.write_text(imap_yaml(dovecot.port))
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(file)}
    )
    config = load_config(file)
    ctx = AppContext(settings, config, tmp_path, stores)
    dying = Stores.connect(
        StorageSettings(connection_string=azurite.connection_string), DiesSavingTheCursor()
    )
    dying_ctx = AppContext(settings, config, tmp_path, dying)
    set_context(ctx)
    try:
        deliver(dovecot, range(1, 3))
        assert poll_one(ctx, "imap", datetime.now(UTC)) == "queued 2"  # the flags' baseline
        before = stores.table(IMAP_STATE).partition("imap")
        (row,) = list(before)
        assert row["Folder"] == FOLDER and row["Flagged"] == ""

        set_flag(dovecot, 1, on=True)
        assert poll_one(dying_ctx, "imap", datetime.now(UTC)) == "failed"
        assert task_changes(stores) == [flag(1, "flagged")]  # sent before the cursor ...
        (unmoved,) = list(stores.table(IMAP_STATE).partition("imap"))
        assert unmoved["Flagged"] == "" and unmoved["At"] == row["At"]  # ... which stayed

        # The next poll (a healthy worker) sees the change again and sends it again.
        assert poll_one(ctx, "imap", datetime.now(UTC)) == "queued 0"
        assert task_changes(stores) == [flag(1, "flagged")] * 2
        (moved,) = list(stores.table(IMAP_STATE).partition("imap"))
        assert moved["Flagged"] == "1"
        assert poll_one(ctx, "imap", datetime.now(UTC)) == "queued 0"
        assert task_changes(stores) == [flag(1, "flagged")] * 2  # the cursor moved: once is all
    finally:
        set_context(None)


def test_a_graph_poll_returns_its_delta_links_and_versions_and_leaves_no_message_and_no_row(
    graph_world: GraphWorld,
) -> None:
    fake, stores = graph_world.fake, graph_world.ctx.stores
    mailbox = graph_world.ctx.config.mailbox("m365")
    assert isinstance(mailbox, GraphMailbox)
    first_ids = [fake.add_message(GRAPH_USER, "inbox", mail(n, "contoso.example")) for n in (1, 2)]
    first = graph_source(mailbox, stores).poll({})
    assert sorted(first.refs) == sorted(first_ids) and first.incremental
    assert set(first.versions) == set(first_ids)  # the changeKey delta listed each with
    assert list(first.cursor) == list(mailbox.folders)
    assert all(str(c["DeltaLink"]).startswith("http") for c in first.cursor.values())
    # The poll made Graph calls (holding Graph's slots, which are blob leases) and nothing else.
    assert all(stores.queues.depth(q) == 0 for q in QUEUES)
    assert all(list(stores.table(t).all()) == [] for t in TABLES)

    (third,) = [fake.add_message(GRAPH_USER, "inbox", mail(3, "contoso.example"))]
    later = graph_source(mailbox, stores).poll(first.cursor)
    assert list(later.refs) == [third]
    assert all(list(stores.table(t).all()) == [] for t in TABLES)
