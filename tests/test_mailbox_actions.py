"""After-filing mailbox actions as their own step (issue 18, points 1, 3 and 7): run once per
mail and mailbox, retried after a throttling or failing server, poisoned with their row marked
failed and counted, never run against what the user did, and never inside a server's back-off.

Against the fake Graph over real HTTPS (with the local host serving its webhook), a real
Dovecot, and local files; Azurite throughout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imapclient import IMAPClient

from shared.cli.azurite import Azurite
from shared.cli.operations import cmd_poison_replay
from shared.core.contracts import ActionsJob, InboundMessage
from shared.core.message import id_key
from shared.services.actions import STALE
from shared.services.context import AppContext, set_context
from shared.services.health import health_report
from shared.services.retention import run_retention
from shared.settings import AppSettings, load_config
from shared.sources.graph.subscriptions import maintain
from shared.stages.mailbox_actions import handle_actions, sweep
from shared.stages.polls import poll_all, schedule_polls
from shared.store import pending_actions
from shared.store.backoff import backoff_until, note_backoff
from shared.store.queues import decode
from shared.store.stores import (
    ACTIONS,
    FILING,
    INBOUND,
    MAILBOX_ACTIONS,
    MESSAGES,
    OUTBOUND,
    POLLS,
    RETENTION,
    Stores,
    poison,
)
from tests.fakes.cutting_proxy import CuttingProxy
from tests.fakes.dovecot import Dovecot, require_dovecot
from tests.fakes.graph_faults import Fault
from tests.sources.graph_setup import USER, GraphWorld, graph_world

from .helpers import filed_keys, local_host, records

pytestmark = pytest.mark.azurite
__all__ = ["graph_world"]
FILED = "Mailfiler/Обработано"  # a folder path in another script (created on first move)


def now() -> datetime:
    return datetime.now(UTC)


def graph_mail(n: int) -> bytes:
    return (
        f"From: 顧客{n} <customer{n}@customer.example>\r\nTo: {USER}\r\n"
        f"Subject: =?UTF-8?B?5rOo5paH?= {n}\r\nMessage-ID: <act{n}@customer.example>\r\n"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nЗдравствуйте {n}.\r\n"
    ).encode()


def graph_filing(world: GraphWorld) -> str:
    """A Graph mailbox that marks read and moves after filing; one mail filed through a
    notification. Returns the mail's (immutable) id."""
    world.reconfigure(f"    after_filing: {{mark_read: true, move_to: {FILED}}}\n")
    maintain(world.ctx.config, world.ctx.stores, now())
    msg_id = world.fake.add_message(USER, "inbox", graph_mail(1))
    assert world.fake.deliver().failed == 0
    return msg_id


def folder_of(world: GraphWorld, msg_id: str) -> str:
    parent = world.fake.message(USER, msg_id)["parentFolderId"]
    (folder,) = [f["displayName"] for f in world.fake.folders(USER) if f["id"] == parent]
    return str(folder)


def the_row(stores: Stores, mailbox: str, key: str | None = None) -> dict[str, object]:
    if key is None:
        (key,) = filed_keys(stores)
    row = pending_actions.get(stores, mailbox, key)
    assert row is not None
    return row


MOVES = r"/messages/[^/]+/move$"


# --- Graph -------------------------------------------------------------------------------------


def test_a_throttled_move_waits_out_the_back_off_then_completes(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    # Longer than the client waits in-process: it gives up with GraphThrottled(11).
    fake.faults.throttle(count=1, retry_after=11, path=MOVES, method="POST")
    msg_id = graph_filing(graph_world)
    assert fake.message(USER, msg_id)["isRead"] is False  # queued, not filed: untouched
    graph_world.host.drain(timeout=120)
    assert folder_of(graph_world, msg_id) == "Обработано"
    assert fake.message(USER, msg_id)["isRead"] is True
    throttled = [r for r in fake.requests if r.status == 429]
    moves = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/move")]
    assert len(throttled) == 1 and len(moves) == 2 and moves[0] is throttled[0]
    # No request of any kind reached the mailbox inside the server's 11 s back-off.
    quiet = [
        r
        for r in fake.requests
        if r.user == USER and throttled[0].started < r.started < throttled[0].started + 11
    ]
    assert quiet == [], [(r.method, r.path) for r in quiet]
    row = the_row(ctx.stores, "m365")
    assert row["State"] == "done" and row["Attempts"] == 2
    assert "throttled" in str(row["LastError"])
    assert health_report(ctx)["mailboxes"]["m365"]["actions_pending"] == 0


def test_the_users_move_back_and_unread_survive_duplicate_notifications(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    msg_id = graph_filing(graph_world)
    graph_world.host.drain()
    assert folder_of(graph_world, msg_id) == "Обработано"
    (key,) = filed_keys(ctx.stores)
    filed_folder = ctx.stores.table(MESSAGES).get(key, "msg")
    assert filed_folder is not None
    # Our own PATCH and move come back as notifications, each twice.
    fake.deliver(duplicate_rate=1.0, seed=3)
    graph_world.host.drain()
    # The user moves the mail back to the inbox and marks it unread; Graph notifies each
    # change, twice; the safety delta sync lists it too; a redelivered plan comes along.
    fake.move_message(USER, msg_id, "inbox")
    fake.update_message(USER, msg_id, is_read=False)
    fake.deliver(duplicate_rate=1.0, seed=4)
    graph_world.host.drain()
    poll_all(ctx, now())
    graph_world.host.drain()
    fake.deliver(duplicate_rate=1.0, seed=5)
    graph_world.host.drain()
    # Two fetches of duplicate notifications that raced each saw the move: two sightings of
    # the mail where it now is (the second one looks like a redelivery).
    moved = ctx.stores.table(MESSAGES).get(key, "msg")
    assert moved is not None
    sighting = InboundMessage(
        mailbox="m365", source_id=msg_id, blob=str(moved["Blob"]), folder=str(moved["Folder"])
    )
    for _ in range(2):
        ctx.stores.queues.send(INBOUND, sighting)
        graph_world.host.drain()
    assert folder_of(graph_world, msg_id) == "Inbox"
    assert fake.message(USER, msg_id)["isRead"] is False
    assert fake.count(MOVES, method="POST") == 1  # our own move ran once
    # The user's move is recorded: the message row and its sighting know where it is now.
    row = ctx.stores.table(MESSAGES).get(key, "msg")
    assert row is not None and row["Folder"] == filed_folder["Folder"]
    assert the_row(ctx.stores, "m365")["State"] == "done"
    done = [a for a in ctx.stores.table(ACTIONS).all() if a["Action"] == "move"]
    assert len(done) == 1
    assert len(records(ctx.stores)) == 1


def test_a_failing_action_ends_in_poison_with_its_row_failed_and_counted(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    refuse = Fault(
        status=400,
        path=MOVES,
        method="POST",
        code="ErrorMoveCopyFailed",
        message="The move or copy operation failed: запрещено",
    )
    fake.faults.add(refuse)
    msg_id = graph_filing(graph_world)
    graph_world.host.drain()
    assert ctx.stores.queues.depth(poison(MAILBOX_ACTIONS)) == 1
    row = the_row(ctx.stores, "m365")
    assert row["State"] == "failed" and "ErrorMoveCopyFailed" in str(row["Reason"])
    report = health_report(ctx)
    entry = report["mailboxes"]["m365"]
    assert (entry["actions_pending"], entry["actions_failed"]) == (0, 1)
    assert report["status"] == "degraded"
    assert any("after-filing actions failed" in w for w in entry["warnings"])
    assert folder_of(graph_world, msg_id) == "Inbox"  # nothing moved; the mail is filed
    assert len(records(ctx.stores)) == 1
    # After a fix, the operator replays the poison message: the row runs again, once.
    fake.faults.clear()
    assert cmd_poison_replay(ctx.stores, MAILBOX_ACTIONS, None) == 0
    graph_world.host.drain()
    assert folder_of(graph_world, msg_id) == "Обработано"
    assert the_row(ctx.stores, "m365")["State"] == "done"
    entry = health_report(ctx)["mailboxes"]["m365"]
    assert (entry["actions_pending"], entry["actions_failed"]) == (0, 0)
    assert refuse.hits == 5  # the queue's five tries, then poison


def test_a_throttled_send_holds_every_request_to_the_mailbox_until_the_back_off_ends(
    graph_world: GraphWorld,
) -> None:
    world, fake, ctx = graph_world, graph_world.fake, graph_world.ctx
    world.reconfigure(
        "    polling_only: true\n    after_filing: {mark_read: true}\n",
        "routes:\n  - {name: all, record_type: case, acknowledge: true}\n",
    )
    msg_id = fake.add_message(USER, "inbox", graph_mail(2))
    assert poll_all(ctx, now())["m365"] == "queued 1"
    world.host.drain(only={INBOUND, FILING})
    assert ctx.stores.queues.depth(MAILBOX_ACTIONS) == 1
    # The acknowledgement's sendMail is throttled: the send path notes the back-off.
    fake.faults.throttle(count=1, retry_after=11, path=r"/sendMail$", method="POST")
    world.host.drain(only={OUTBOUND}, timeout=1)
    until = backoff_until(ctx.stores, "m365", now())
    assert until is not None and fake.sent_mail == []
    assert poll_all(ctx, now())["m365"].startswith("backing off")
    world.host.drain(timeout=120)
    (throttled,) = [r for r in fake.requests if r.status == 429]
    quiet = [
        r
        for r in fake.requests
        if r.user == USER and throttled.started < r.started < until.timestamp()
    ]
    assert quiet == [], [(r.method, r.path) for r in quiet]
    assert len(fake.sent_mail) == 1  # sent once, after the back-off
    assert fake.message(USER, msg_id)["isRead"] is True
    assert the_row(ctx.stores, "m365", id_key("act2@customer.example"))["State"] == "done"


# --- IMAP (real Dovecot) -------------------------------------------------------------------


IMAP_USER, IMAP_PASSWORD = "support@example.test", "imap-password"
IMAP_FILED = "Обработано"


class ImapWorld:
    def __init__(self, dovecot: Dovecot, stores: Stores, azurite: Azurite, tmp: Path) -> None:
        self.dovecot, self.stores = dovecot, stores
        # A proxy in front of Dovecot: when each connection came (what reached the server, and
        # when), and a command or its answer lost on purpose (the network failing).
        self.proxy = CuttingProxy(dovecot.port).start()
        file = tmp / "mailfiler.yaml"
        file.write_text(
            "record_types: [{name: case, prefix: CASE}]\n"
            "mailboxes:\n"
            "  - name: imap\n"
            "    kind: imap\n"
            "    host: 127.0.0.1\n"
            f"    port: {self.proxy.port}\n"
            "    tls: none\n"
            f"    username: {IMAP_USER}\n"
            "    password_setting: IMAP_TEST_PASSWORD\n"
            "    record_type: case\n"
            f"    after_filing: {{mark_read: true, move_to: {IMAP_FILED}}}\n"
        )
        settings = AppSettings.model_validate(
            {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(file)}
        )
        self.ctx = AppContext(settings, load_config(file), tmp, stores)
        set_context(self.ctx)
        self.host = local_host(stores.queues, visibility_timeout=0)

    def client(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.dovecot.port, ssl=False)
        client.login(IMAP_USER, IMAP_PASSWORD)
        return client

    def append(self, raw: bytes) -> None:
        with self.client() as client:
            client.append("INBOX", raw)

    def uids(self, folder: str, *criteria: str) -> list[int]:
        with self.client() as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            return list(client.search(list(criteria) or ["ALL"]))


@pytest.fixture
def imap_world(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ImapWorld]:
    require_dovecot()
    monkeypatch.setenv("IMAP_TEST_PASSWORD", IMAP_PASSWORD)
    with Dovecot(users={IMAP_USER: IMAP_PASSWORD}) as server:
        world = ImapWorld(server, stores, azurite, tmp_path)
        try:
            yield world
        finally:
            world.proxy.stop()
            set_context(None)


def imap_mail(n: int) -> bytes:
    return (
        f"From: Ελένη {n} <eleni{n}@example.org>\r\nTo: {IMAP_USER}\r\n"
        f"Subject: Ερώτηση {n}\r\nMessage-ID: <imap-act-{n}@example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nΚαλημέρα {n}.\r\n"
    ).encode()


def test_imap_the_users_move_back_and_unread_are_never_undone(imap_world: ImapWorld) -> None:
    world = imap_world
    world.append(imap_mail(1))
    assert poll_all(world.ctx, now())["imap"] == "queued 1"
    world.host.drain()
    assert world.uids("INBOX") == [] and len(world.uids(IMAP_FILED, "SEEN")) == 1
    # The user moves it back (a new UID in INBOX) and marks it unread.
    with world.client() as client:
        client.select_folder(IMAP_FILED)
        uids = client.search(["ALL"])
        client.remove_flags(uids, [b"\\Seen"])
        client.move(uids, "INBOX")
    for _ in range(2):  # polls after it: a new copy of a filed mail, then nothing new
        poll_all(world.ctx, now())
        world.host.drain()
    assert len(world.uids("INBOX", "UNSEEN")) == 1
    assert world.uids(IMAP_FILED) == []
    (key,) = filed_keys(world.stores)
    sightings = [
        e for e in world.stores.table(MESSAGES).partition(key) if e["RowKey"].startswith("s-")
    ]
    assert sorted(e["Folder"] for e in sightings) == ["INBOX", "INBOX"]  # two UIDs seen there
    row = the_row(world.stores, "imap")
    assert row["State"] == "done" and row["Attempts"] == 1
    moves = [a for a in world.stores.table(ACTIONS).all() if a["Action"] == "move"]
    assert len(moves) == 1 and len(records(world.stores)) == 1


def test_imap_an_action_lost_with_the_connection_is_retried_and_completed(
    imap_world: ImapWorld,
) -> None:
    """The MOVE never reaches Dovecot (the connection drops): the source raises a transient
    error, the actions stage runs again after its delay, and the mail ends filed, read and
    moved once; the row says done after two attempts."""
    world, stores = imap_world, imap_world.stores
    world.append(imap_mail(2))
    assert poll_all(world.ctx, now())["imap"] == "queued 1"
    world.proxy.cut(b" MOVE ", deliver=False)
    world.host.drain(only={INBOUND, FILING})
    assert the_row(stores, "imap")["State"] == "pending"
    world.host.drain(timeout=120)  # the first run fails; the retry comes FIRST_RETRY s later
    assert len(world.proxy.matched) == 1, "the MOVE was not lost"
    row = the_row(stores, "imap")
    assert row["State"] == "done" and row["Attempts"] == 2, row
    assert world.uids("INBOX") == []
    assert len(world.uids(IMAP_FILED, "SEEN")) == 1  # moved once: one copy, read
    assert health_report(world.ctx)["mailboxes"]["imap"]["actions_failed"] == 0


def test_imap_no_poll_or_action_reaches_a_server_inside_its_back_off(
    imap_world: ImapWorld,
) -> None:
    world, stores = imap_world, imap_world.stores
    world.append(imap_mail(1))
    assert poll_all(world.ctx, now())["imap"] == "queued 1"
    world.host.drain(only={INBOUND, FILING})  # filed; its actions wait in their queue
    assert world.uids("INBOX", "UNSEEN") != []
    assert the_row(stores, "imap")["State"] == "pending"
    # The server asks for quiet (as an [UNAVAILABLE] answer does through SourceBusy).
    until = note_backoff(stores, "imap", now(), 4, "SourceBusy: [UNAVAILABLE] try later")
    opened = len(world.proxy.opened)
    assert poll_all(world.ctx, now())["imap"].startswith("backing off")
    assert schedule_polls(world.ctx, now())["imap"].startswith("backing off")
    assert stores.queues.depth(POLLS) == 0
    world.host.drain(timeout=60)
    later = world.proxy.opened[opened:]
    assert later, "the actions never ran"
    assert min(later) >= until.timestamp(), (min(later), until.timestamp())
    assert world.uids("INBOX") == [] and len(world.uids(IMAP_FILED, "SEEN")) == 1
    assert the_row(stores, "imap")["State"] == "done"
    assert backoff_until(stores, "imap", now()) is None
    assert poll_all(world.ctx, now())["imap"] == "queued 0"  # polled again once it ended


# --- local files: the row is the truth ------------------------------------------------------


@pytest.fixture
def local_ctx(
    stores: Stores, azurite: Azurite, tmp_path: Path, sample_dir: Path
) -> Iterator[AppContext]:
    file = tmp_path / "mailfiler.yaml"
    file.write_text(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        f"  - {{name: files, kind: local, path: '{sample_dir}', record_type: case,\n"
        "      after_filing: {mark_read: true, move_to: Готово}}\n"
    )
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(file)}
    )
    ctx = AppContext(settings, load_config(file), tmp_path, stores)
    set_context(ctx)
    yield ctx
    set_context(None)


def test_a_lost_actions_message_is_sent_again_by_the_sweep_and_runs_once(
    local_ctx: AppContext,
) -> None:
    ctx, stores = local_ctx, local_ctx.stores
    host = local_host(stores.queues, visibility_timeout=0)
    queued = int(poll_all(ctx, now())["files"].split()[1])
    host.drain(only={INBOUND, FILING})
    filed = filed_keys(stores)
    assert len(filed) == queued and stores.queues.depth(MAILBOX_ACTIONS) == queued
    first = decode(stores.queues.peek(MAILBOX_ACTIONS, 1)[0], ActionsJob)
    stores.queues.clear(MAILBOX_ACTIONS)  # the messages are lost (a crash after the rows)
    assert health_report(ctx)["mailboxes"]["files"]["actions_pending"] == queued
    assert sweep(ctx, now()) == 0  # not late yet: a message may still be on its way
    assert sweep(ctx, now() + STALE + timedelta(minutes=1)) == queued
    host.drain()
    rows = [pending_actions.get(stores, "files", key) for key in filed]
    assert all(r is not None and r["State"] == "done" and r["Attempts"] == 1 for r in rows)
    assert health_report(ctx)["mailboxes"]["files"]["actions_pending"] == 0
    # A superseded message, and the current one delivered again, change nothing.
    assert handle_actions(ctx, first.model_dump_json().encode(), now()).endswith(
        "superseded by a later message"
    )
    row = pending_actions.get(stores, first.mailbox, first.message_key)
    assert row is not None
    again = first.model_copy(update={"job": row["Job"]}).model_dump_json().encode()
    assert handle_actions(ctx, again, now()).endswith("done already")
    noted = [a for a in stores.table(ACTIONS).all() if a["Action"] == "move"]
    assert len(noted) == queued  # one note per mail: run once each
    assert sweep(ctx, now() + STALE * 3) == 0


def test_retention_leaves_a_mailbox_alone_inside_its_back_off(
    stores: Stores, azurite: Azurite, tmp_path: Path, sample_dir: Path
) -> None:
    file = tmp_path / "mailfiler.yaml"
    file.write_text(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        f"  - {{name: files, kind: local, path: '{sample_dir}', record_type: case,\n"
        "      after_filing: {delete_after_days: 1}}\n"
    )
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(file)}
    )
    ctx = AppContext(settings, load_config(file), tmp_path, stores)
    set_context(ctx)
    try:
        poll_all(ctx, now())
        local_host(stores.queues, visibility_timeout=0).drain()
        notes = len(list(stores.table(RETENTION).all()))
        assert notes > 0
        later = now() + timedelta(days=2)
        note_backoff(stores, "files", later, 30, "SourceBusy: busy")
        waiting = run_retention(ctx, later)
        assert waiting.recorded == 0 and waiting.failed == [
            ("files", "the server asked for quiet (back-off)")
        ]
        assert len(list(stores.table(RETENTION).all())) == notes  # kept for the next run
        done = run_retention(ctx, later + timedelta(minutes=1))
        assert done.recorded == notes and done.failed == []
    finally:
        set_context(None)
