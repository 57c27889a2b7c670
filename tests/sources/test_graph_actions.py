"""Graph mailbox actions against the fake Graph over real HTTPS (issue 18): a move target
created once under a race and cached, one PATCH per mail, our own changes recognised without a
fetch, throttling carried with the server's Retry-After and obeyed, and a client state secret
rotation that leaves exactly the new subscriptions."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from shared.cli.azurite import free_port
from shared.core.contracts import MailboxAction
from shared.sources.base import ActionResult, SourceBusy, SourceUnavailable
from shared.sources.graph.auth import provider_for
from shared.sources.graph.client import GraphClient, GraphThrottled
from shared.sources.graph.clientstate import make, new_nonce
from shared.sources.graph.source import GraphSource, _target_cache
from shared.sources.graph.state import secret_id
from shared.sources.graph.subscriptions import maintain
from shared.stages.graph_fetch import fetch
from shared.store import subscriptions as subscription_rows
from shared.store.backoff import backoff_until
from shared.store.keys import source_key
from shared.store.stores import GRAPH_FETCH, GRAPH_NOTIFICATIONS, GRAPH_STATE, INGEST

from ..helpers import records
from .graph_setup import CLIENT_STATE_SECRET, USER, GraphWorld, graph_world, mime

pytestmark = pytest.mark.azurite
__all__ = ["graph_world"]

TARGET = "Mailfiler/Обработано 归档"  # a path in two scripts, created level by level
AFTER_FILING = (
    f"    after_filing:\n      mark_read: true\n      category: Клиенты\n      move_to: {TARGET}\n"
)


def now() -> datetime:
    return datetime.now(UTC)


def graph_source(world: GraphWorld) -> GraphSource:
    source = world.ctx.source("m365")
    assert isinstance(source, GraphSource)
    return source


def folders_named(world: GraphWorld, name: str) -> list[dict[str, object]]:
    return [f for f in world.fake.folders(USER) if f["displayName"] == name]


def test_two_filings_racing_to_create_the_folder_both_move_into_one(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    ids = [fake.add_message(USER, "inbox", mime(i)) for i in range(4)]
    # Both filings look the folder up, find nothing, and POST it at the same moment.
    fake.faults.rendezvous(2, path=r"/mailFolders$", method="POST")
    results: dict[str, list[ActionResult]] = {}

    def file(msg_id: str) -> None:
        results[msg_id] = graph_source(graph_world).apply(
            msg_id, [MailboxAction(action="move", folder=TARGET)]
        )

    threads = [threading.Thread(target=file, args=(i,)) for i in ids[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.done for i in ids[:2] for r in results[i]] == [True, True]
    assert fake.count(r"/mailFolders$", method="POST", status=201) == 1
    assert fake.count(r"/mailFolders$", method="POST", status=409) == 1  # the race happened
    (parent,) = folders_named(graph_world, "Mailfiler")
    (filed,) = folders_named(graph_world, "Обработано 归档")
    assert filed["parentFolderId"] == parent["id"]
    assert {fake.message(USER, i)["parentFolderId"] for i in ids[:2]} == {filed["id"]}

    # Resolved once: the next move asks Graph nothing about folders.
    fake.clear_requests()
    (third,) = graph_source(graph_world).apply(
        ids[2], [MailboxAction(action="move", folder=TARGET)]
    )
    assert third.done and fake.count(r"/mailFolders") == 0
    assert fake.count(r"/move$", method="POST") == 1
    # A new worker process (its memory empty) reads the id from GraphState, not from Graph.
    _target_cache.clear()
    fake.clear_requests()
    (again_moved,) = graph_source(graph_world).apply(
        ids[2], [MailboxAction(action="move", folder=TARGET)]
    )
    assert again_moved.done and fake.count(r"/mailFolders") == 0

    # A user deletes the folder: the cached id answers 404, it is resolved (made) again.
    box = fake.store.mailbox(USER)
    with fake.store.lock:
        del fake.store.folders[box.id][str(filed["id"])]
    (fourth,) = graph_source(graph_world).apply(
        ids[3], [MailboxAction(action="move", folder=TARGET)]
    )
    assert fourth.done
    (again,) = folders_named(graph_world, "Обработано 归档")
    assert again["id"] != filed["id"]
    assert fake.message(USER, ids[3])["parentFolderId"] == again["id"]


def test_mark_read_and_category_are_one_patch_keeping_the_users_categories(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    msg_id = fake.add_message(USER, "inbox", mime(1), categories=["Личное"])
    source = graph_source(graph_world)
    source.read(msg_id)  # what ingest does: the version read is remembered
    fake.clear_requests()
    actions = [
        MailboxAction(action="mark_read"),
        MailboxAction(action="categorize", category="Клиенты"),
        MailboxAction(action="move", folder="archive"),
    ]
    results = source.apply(msg_id, actions)
    assert [r.done for r in results] == [True, True, True]
    assert fake.count(method="PATCH") == 1 and fake.count(method="GET") == 0
    assert fake.count(r"/move$", method="POST") == 1
    message = fake.message(USER, msg_id)
    assert message["isRead"] is True and message["categories"] == ["Личное", "Клиенты"]
    # A retry of the whole list (say after a throttled move) is harmless.
    again = graph_source(graph_world).apply(msg_id, actions)
    assert [r.done for r in again] == [True, True, True]
    assert "already in category" in again[1].detail
    message = fake.message(USER, msg_id)
    assert message["categories"] == ["Личное", "Клиенты"]
    assert message["parentFolderId"] == fake.folder_id(USER, "archive")


def test_throttling_and_failures_carry_the_servers_numbers(graph_world: GraphWorld) -> None:
    fake = graph_world.fake
    mailbox = graph_world.ctx.config.mailbox("m365")
    msg_id = fake.add_message(USER, "inbox", mime(1))
    slept: list[float] = []
    client = GraphClient(fake.base_url, provider_for(mailbox), sleep=slept.append)  # type: ignore[arg-type]
    source = GraphSource(mailbox, client, graph_world.ctx.stores)  # type: ignore[arg-type]
    move = [MailboxAction(action="mark_read"), MailboxAction(action="move", folder="archive")]

    fake.faults.throttle(count=1, retry_after=120, path=r"/move$")
    with pytest.raises(GraphThrottled) as throttled:
        source.apply(msg_id, move)
    assert isinstance(throttled.value, SourceBusy) and throttled.value.retry_after == 120
    assert slept == []  # longer than a function may wait: not slept through
    assert fake.message(USER, msg_id)["parentFolderId"] == fake.folder_id(USER, "inbox")

    fake.faults.unavailable(count=1, retry_after=45, path=r"/move$")
    with pytest.raises(GraphThrottled) as busy:
        source.apply(msg_id, move)
    assert (busy.value.status, busy.value.retry_after) == (503, 45)

    fake.faults.unavailable(count=10, path=r"/move$")  # 503 without Retry-After: transient
    with pytest.raises(SourceUnavailable):
        source.apply(msg_id, move)
    assert slept and sum(slept) <= client.max_wait

    fake.faults.clear()
    assert [r.done for r in source.apply(msg_id, move)] == [True, True]
    assert fake.message(USER, msg_id)["parentFolderId"] == fake.folder_id(USER, "archive")
    assert fake.count(r"/move$", method="POST", status=201) == 1

    # A server that cannot be reached: transient, retried later, never "done".
    closed = GraphClient(
        f"https://127.0.0.1:{free_port()}",
        provider_for(mailbox),  # type: ignore[arg-type]
        sleep=slept.append,
    )
    unreachable = GraphSource(mailbox, closed, graph_world.ctx.stores)  # type: ignore[arg-type]
    with pytest.raises(SourceUnavailable):
        unreachable.apply(msg_id, [MailboxAction(action="mark_read")])


def test_a_throttled_fetch_waits_out_retry_after_then_files_the_mail(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    fake.add_message(USER, "inbox", mime(7))
    fake.deliver()
    graph_world.host.drain(only={GRAPH_NOTIFICATIONS})
    (job,) = ctx.stores.queues.receive(GRAPH_FETCH, max_messages=32, visibility_timeout=300)
    ctx.stores.queues.clear(GRAPH_FETCH)
    fake.clear_requests()
    fake.faults.throttle(count=1, retry_after=30, path=r"/messages/[^/]+$", method="GET")
    start = now()
    assert "throttled, again in 30 s" in fetch(ctx, job.body, start)
    assert fake.count(r"/messages/", status=429) == 1
    until = backoff_until(ctx.stores, "m365", start)
    assert until is not None and abs((until - start).total_seconds() - 30) < 1
    assert ctx.stores.queues.depth(GRAPH_FETCH) == 1  # the job again, delayed by the pause

    # Within the pause: not a single request reaches Graph.
    before = len(fake.requests)
    assert "pause" in fetch(ctx, job.body, start + timedelta(seconds=29))
    assert len(fake.requests) == before
    ctx.stores.queues.clear(GRAPH_FETCH)

    # After it: read and filed.
    assert "ingested" in fetch(ctx, job.body, start + timedelta(seconds=31))
    graph_world.host.drain()
    assert [r["Title"] for r in records(ctx.stores)] == ["Question 7"]


def test_our_own_patch_and_move_come_back_without_a_fetch(graph_world: GraphWorld) -> None:
    fake = graph_world.fake
    graph_world.reconfigure(AFTER_FILING)
    ctx = graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    warm = fake.add_message(USER, "inbox", mime(100))  # resolves folders once per process
    fake.deliver()
    graph_world.host.drain()
    fake.deliver()
    graph_world.host.drain()
    fake.clear_requests()

    ids = [fake.add_message(USER, "inbox", mime(i)) for i in range(3)]
    fake.deliver(duplicate_rate=0.5, seed=3)
    graph_world.host.drain()
    calls = [r for r in fake.requests if "/v1.0/users/" in r.path]
    assert len(calls) <= 4 * len(ids), [(r.method, r.path) for r in calls]
    assert sum(1 for r in calls if r.method == "PATCH") == len(ids)
    assert sum(1 for r in calls if r.path.endswith("/move")) == len(ids)
    target = folders_named(graph_world, "Обработано 归档")[0]["id"]
    for msg_id in ids:
        message = fake.message(USER, msg_id)
        assert message["isRead"] and message["categories"] == ["Клиенты"]
        assert message["parentFolderId"] == target

    # Our PATCH and move come back, each twice and some duplicated: no Graph call at all.
    fake.clear_requests()
    echoes = fake.deliver(duplicate_rate=0.5, seed=4)
    assert echoes.delivered >= 4 * len(ids)
    graph_world.host.drain()
    assert fake.count(r"/v1.0/users/") == 0, [(r.method, r.path) for r in fake.requests]
    # The folder our move put each mail in is on its ingest row (no sighting needed) ...
    rows = {r["RowKey"]: r for r in ctx.stores.table(INGEST).partition("m365")}
    assert all(r.get("Folder") != "inbox" for r in rows.values() if r.get("Blob"))

    # ... so a user's move back to the inbox is not taken for ours: it is read (its state
    # only, no MIME) and recorded. (That the after-filing actions do not run again on it is
    # the pipeline's part, issue 18 point 3.)
    fake.clear_requests()
    fake.move_message(USER, ids[0], "inbox")
    fake.update_message(USER, ids[0], is_read=False)
    fake.deliver(duplicate_rate=1.0, seed=5)
    graph_world.host.drain(only={GRAPH_NOTIFICATIONS, GRAPH_FETCH})
    assert fake.count(rf"/messages/{ids[0]}$", method="GET") >= 1
    assert fake.count(r"/\$value$") == 0
    row = ctx.stores.table(INGEST).get("m365", source_key(ids[0]))
    assert row is not None and row["Folder"] == "inbox"
    assert warm


def test_rotating_the_client_state_secret_leaves_only_new_subscriptions(
    graph_world: GraphWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    first = maintain(ctx.config, ctx.stores, now())
    (old,) = fake.subscriptions
    assert first.created == 1
    # An orphan made with the old secret (its row lost), and one of another deployment of
    # the same app (another URL), which is not ours to delete.
    mailbox = ctx.config.mailbox("m365")
    client = GraphClient(fake.base_url, provider_for(mailbox))  # type: ignore[arg-type]
    old_secret = CLIENT_STATE_SECRET.encode()

    def subscribe(url: str, state: str) -> str:
        return str(
            client.request(
                "POST",
                "subscriptions",
                json={
                    "changeType": "created,updated",
                    "notificationUrl": url,
                    "resource": f"users/{USER}/messages",
                    "expirationDateTime": (now() + timedelta(days=1)).isoformat(),
                    "clientState": state,
                },
            ).json()["id"]
        )

    orphan = subscribe(f"{graph_world.base}/graph/notifications", make(old_secret, new_nonce()))
    other = subscribe(f"{graph_world.base}/graph/notifications?deployment=staging", "theirs")

    new_secret = "новый-секрет-2027"
    monkeypatch.setenv("GRAPH_CLIENT_STATE_SECRET", new_secret)
    rotated = maintain(ctx.config, ctx.stores, now())
    assert (rotated.recreated, rotated.retired, rotated.failed) == (1, 2, [])
    live = {s.id for s in fake.subscriptions}
    row = subscription_rows.get(ctx.stores.table(GRAPH_STATE), "m365", "mail")
    assert row is not None and row["SecretId"] == secret_id(new_secret.encode())
    assert live == {row["SubscriptionId"], other}
    assert old.id not in live and orphan not in live
    assert rotated.resync == {"m365"}  # mail announced meanwhile is caught up by delta

    # New mail is announced once (one subscription of ours), signed with the new secret.
    fake.add_message(USER, "inbox", mime(3))
    ours = [n for n in fake.outbox if n["subscriptionId"] == row["SubscriptionId"]]
    assert len(ours) == 1 and json.dumps(ours[0])
    fake.deliver()
    graph_world.host.drain()
    assert [r["Title"] for r in records(ctx.stores)] == ["Question 3"]
    # A second pass keeps everything as it is.
    assert maintain(ctx.config, ctx.stores, now()).retired == 0
    assert {s.id for s in fake.subscriptions} == live


def test_a_polling_only_mailbox_sees_our_own_patch_in_delta_without_a_fetch(
    graph_world: GraphWorld,
) -> None:
    """Without notifications, delta is what brings our own PATCH back (mark read and category,
    no move: the mail stays in the watched folder). The version delta lists is ours: the poll's
    fetch job names it and costs no Graph call; a change by the user still gets read."""
    fake = graph_world.fake
    graph_world.reconfigure("    polling_only: true\n    after_filing: {mark_read: true}\n")
    ctx = graph_world.ctx
    from shared.stages.polls import poll_all

    ids = [fake.add_message(USER, "inbox", mime(200 + i)) for i in range(3)]
    assert poll_all(ctx, now())["m365"] == "queued 3"
    graph_world.host.drain()
    assert all(fake.message(USER, i)["isRead"] for i in ids)

    fake.clear_requests()
    poll_all(ctx, now())  # delta lists the three again: our PATCH changed them
    assert ctx.stores.queues.depth(GRAPH_FETCH) == 3
    graph_world.host.drain()
    per_message = [r for r in fake.requests if "/messages/" in r.path and "delta" not in r.path]
    assert per_message == [], [(r.method, r.path) for r in per_message]

    fake.update_message(USER, ids[0], is_read=False)  # the user marks one unread
    fake.clear_requests()
    poll_all(ctx, now())
    graph_world.host.drain()
    assert fake.count(rf"/messages/{ids[0]}$", method="GET") == 1
    assert fake.message(USER, ids[0])["isRead"] is False  # and it stays unread
