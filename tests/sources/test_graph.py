"""The Graph source against the fake Graph over real HTTPS, with the local host serving the
webhook over real HTTP: subscriptions with the real handshake, notifications to filed mail,
delta catch-up, polling-only mode, mailbox actions, renewals."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from shared.core.contracts import MailboxAction
from shared.services.mailboxes import mailbox_status
from shared.sources.graph.auth import provider_for
from shared.sources.graph.client import GraphClient, GraphThrottled
from shared.sources.graph.clientstate import make
from shared.sources.graph.source import GraphSource
from shared.sources.graph.subscriptions import maintain
from shared.stages.graph_notifications import unpack
from shared.stages.polls import poll_all
from shared.store import subscriptions as subscription_rows
from shared.store.stores import GRAPH_NOTIFICATIONS, GRAPH_STATE

from ..helpers import records, timeline_counts, timeline_entries
from .graph_setup import CLIENT_STATE_SECRET, USER, GraphWorld, graph_world, mime

pytestmark = pytest.mark.azurite
__all__ = ["graph_world"]


def now() -> datetime:
    return datetime.now(UTC)


def test_tokens_are_cached_and_throttling_is_waited_out(graph_world: GraphWorld) -> None:
    fake = graph_world.fake
    mailbox = graph_world.ctx.config.mailbox("m365")
    tokens = provider_for(mailbox)  # type: ignore[arg-type]
    assert tokens.token() == tokens.token()
    assert fake.count(r"/oauth2/v2.0/token$") == 1
    slept: list[float] = []
    client = GraphClient(fake.base_url, tokens, sleep=slept.append)
    fake.faults.throttle(count=2, retry_after=1, path=r"/mailFolders/inbox$")
    assert client.get(f"users/{USER}/mailFolders/inbox")["displayName"] == "Inbox"
    assert slept == [1.0, 1.0]
    fake.faults.throttle(count=1, retry_after=120, path=r"/mailFolders/inbox$")
    with pytest.raises(GraphThrottled) as caught:
        client.get(f"users/{USER}/mailFolders/inbox")
    assert caught.value.retry_after == 120


def test_subscribing_performs_the_handshake_and_notifications_file_mail(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    summary = maintain(ctx.config, ctx.stores, now())
    assert (summary.created, summary.failed) == (1, [])
    (sub,) = fake.subscriptions
    assert sub.resource == f"users/{USER}/messages" and sub.change_types == ("created", "updated")
    handshakes = fake.validations
    assert {v.url.split("?")[0] for v in handshakes} == {
        f"{graph_world.base}/graph/notifications",
        f"{graph_world.base}/graph/lifecycle",
    }
    assert all(
        v.ok and v.content_type and v.content_type.startswith("text/plain") for v in handshakes
    )

    ids = [fake.add_message(USER, "inbox", mime(i)) for i in range(6)]
    fake.add_message(USER, "drafts", mime(99))  # not a watched folder
    report = fake.deliver(batch_size=4, duplicate_rate=0.5, shuffle=True, seed=7)
    assert report.failed == 0 and set(report.statuses) == {202}
    graph_world.host.drain()
    titles = sorted(r["Title"] for r in records(ctx.stores))
    assert titles == [f"Question {i}" for i in range(6)]
    assert sum(timeline_counts(ctx.stores).values()) == 6
    # Mail sent and replied from Outlook is filed too: Sent Items is watched by default.
    fake.add_message(USER, "sentitems", mime(50, reply_to=0, sender=USER))
    fake.deliver()
    graph_world.host.drain()
    assert sum(timeline_counts(ctx.stores).values()) == 7
    # Read from Sent Items, it is ours (direction out); everything read from the inbox is not.
    entries = timeline_entries(ctx.stores, ["MessageKey", "Direction", "Folder"])
    directions = {bytes.fromhex(e["MessageKey"]).decode(): e["Direction"] for e in entries}
    assert directions.pop("m50@customer.example") == "out"
    assert set(directions.values()) == {"in"}
    assert len(ids) == 6


def test_forged_or_unknown_notifications_enqueue_nothing(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    (sub,) = fake.subscriptions
    msg_id = fake.add_message(USER, "inbox", mime(1))
    (genuine,) = fake.outbox
    url = f"{graph_world.base}/graph/notifications"
    forged = {**genuine, "clientState": make(b"not-the-secret", "0123456789abcdef01234567")}
    wrong_mac = {**genuine, "clientState": genuine["clientState"][:-4] + "AAAA"}
    unknown = {
        **genuine,
        "clientState": make(CLIENT_STATE_SECRET.encode(), "feedfacefeedfacefeedface"),
    }
    for body in ({"value": [forged]}, {"value": [wrong_mac]}, {"value": [unknown]}):
        assert fake.forge(url, body).status == 202
    assert ctx.stores.queues.depth(GRAPH_NOTIFICATIONS) == 0
    assert fake.forge(url, b"{not json").status == 400
    assert fake.forge(url, b"x" * (1024 * 1024 + 1)).status == 413
    assert ctx.stores.queues.depth(GRAPH_NOTIFICATIONS) == 0
    assert fake.forge(url, {"value": [genuine]}).status == 202
    assert ctx.stores.queues.depth(GRAPH_NOTIFICATIONS) == 1
    assert sub.id and msg_id


def test_dropped_notifications_are_recovered_by_delta_after_missed(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    poll_all(ctx, now())  # the first sync sets the delta links (an empty mailbox)
    graph_world.host.drain()
    for i in range(5):
        fake.add_message(USER, "inbox", mime(i))
    assert fake.drop_outbox(send_missed=True) == 5
    graph_world.host.drain()  # the lifecycle event asks for a resync
    assert records(ctx.stores) == []
    assert poll_all(ctx, now())["m365"] == "queued 5"
    graph_world.host.drain()
    assert len(records(ctx.stores)) == 5
    # Caught up: the next poll is notification-driven again, and delta would list nothing new.
    assert poll_all(ctx, now())["m365"] == "notifications"


def test_polling_only_mailbox_syncs_incrementally_from_a_start_date(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    old = datetime(2025, 1, 10, tzinfo=UTC)
    fake.add_message(USER, "inbox", mime(1), received=old)
    fake.add_message(USER, "inbox", mime(2))
    graph_world.reconfigure("    polling_only: true\n    first_sync_from: 2026-01-01\n")
    ctx = graph_world.ctx
    assert maintain(ctx.config, ctx.stores, now()).created == 0  # no subscriptions
    assert poll_all(ctx, now())["m365"] == "queued 1"
    graph_world.host.drain()
    assert [r["Title"] for r in records(ctx.stores)] == ["Question 2"]
    assert poll_all(ctx, now())["m365"] == "queued 0"
    fake.add_message(USER, "sentitems", mime(3, reply_to=2, sender=USER))
    fake.expire_delta_tokens()  # Graph forgot the sync state: a full sync, nothing twice
    assert poll_all(ctx, now())["m365"] == "queued 1"
    graph_world.host.drain()
    assert sum(timeline_counts(ctx.stores).values()) == 2


def test_mailbox_actions_need_only_the_message_id(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    msg_id = fake.add_message(USER, "inbox", mime(1))
    source = ctx.source("m365")
    assert isinstance(source, GraphSource)
    results = source.apply(
        msg_id,
        [
            MailboxAction(action="mark_read"),
            MailboxAction(action="categorize", category="Filed"),
            MailboxAction(action="move", folder="Mailfiler/Filed"),
        ],
    )
    assert [r.done for r in results] == [True, True, True]
    message = fake.message(USER, msg_id)  # the same immutable id after the move
    assert message["isRead"] is True and message["categories"] == ["Filed"]
    (parent,) = [f for f in fake.folders(USER) if f["displayName"] == "Mailfiler"]
    (filed,) = [f for f in fake.folders(USER) if f["displayName"] == "Filed"]
    assert filed["parentFolderId"] == parent["id"] and message["parentFolderId"] == filed["id"]
    (deleted,) = source.apply(msg_id, [MailboxAction(action="delete")])
    assert deleted.done
    assert fake.message(USER, msg_id)["parentFolderId"] == fake.folder_id(USER, "deleteditems")
    (gone,) = source.apply("AAMkAGI2-no-such-message", [MailboxAction(action="mark_read")])
    assert not gone.done and "gone" in gone.detail


def test_renewals_go_in_batches_and_a_vanished_subscription_is_recreated(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    first = maintain(ctx.config, ctx.stores, now())
    assert first.created == 1
    assert maintain(ctx.config, ctx.stores, now()).renewed == 0  # not near expiry yet
    later = now() + timedelta(days=6)
    renewed = maintain(ctx.config, ctx.stores, later)
    assert (renewed.renewed, renewed.batches) == (1, 1)
    assert fake.count(r"/\$batch$") == 1
    (sub,) = fake.subscriptions
    fake.remove_subscription(sub.id)
    again = maintain(ctx.config, ctx.stores, later + timedelta(days=6))
    assert again.recreated == 1 and len(fake.subscriptions) == 1
    row = subscription_rows.get(ctx.stores.table(GRAPH_STATE), "m365", "mail")
    assert row is not None and row["SubscriptionId"] == fake.subscriptions[0].id


def test_mailbox_status_shows_each_subscription_and_a_failing_one_fails_the_mailbox(
    graph_world: GraphWorld,
) -> None:
    ctx = graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    status = mailbox_status(ctx)["m365"]
    assert set(status["subscriptions"]) == {"mail"}
    assert status["subscriptions"]["mail"]["status"] == "active"
    assert status["status"] != "failing"
    table = ctx.stores.table(GRAPH_STATE)
    subscription_rows.note_failing(table, "m365", "mail", "Graph: 拒否されました", now())
    status = mailbox_status(ctx)["m365"]
    assert status["subscriptions"]["mail"]["last_error"] == "Graph: 拒否されました"
    assert status["status"] == "failing"


def test_lifecycle_subscription_removed_recreates_it(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    (sub,) = fake.subscriptions
    assert fake.send_lifecycle(sub.id, "subscriptionRemoved").status == 202
    graph_world.host.drain()
    (fresh,) = fake.subscriptions
    assert fresh.id != sub.id
    resync = ctx.stores.table(GRAPH_STATE).get("m365", "resync")
    assert resync is not None and resync["Requested"] is True


def test_validation_answers_the_decoded_token_as_plain_text(graph_world: GraphWorld) -> None:
    token = "Validation: Token with spaces & symbols +/="
    query = urllib.parse.urlencode({"validationToken": token})
    request = urllib.request.Request(
        f"{graph_world.base}/graph/notifications?{query}", data=b"", method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.read().decode() == token
    assert json.dumps(token)


def test_a_flag_creates_a_task_that_follows_the_flag(graph_world: GraphWorld) -> None:
    graph_world.reconfigure("    tasks: {record_type: task}\n")
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    msg_id = fake.add_message(USER, "inbox", mime(1))
    fake.deliver()
    graph_world.host.drain()
    (case,) = records(ctx.stores)
    start = datetime(2026, 11, 25, 9, tzinfo=UTC)
    due = datetime(2026, 11, 27, 17, tzinfo=UTC)
    fake.set_flag(USER, msg_id, "flagged", start, due)
    fake.deliver()
    graph_world.host.drain()
    tasks = [r for r in records(ctx.stores) if r["PartitionKey"] == "task"]
    (task,) = tasks
    assert task["DisplayId"] == "TASK-1" and task["Status"] == "new"
    assert task["F_Parent"] == case["DisplayId"] == "CASE-1"
    assert datetime.fromisoformat(task["F_Start"]) == start
    assert datetime.fromisoformat(task["F_Due"]) == due
    assert timeline_counts(ctx.stores)[f"task-{task['RowKey']}"] == 1  # the flagged mail
    # The same notification again changes nothing; completing the flag completes the task.
    fake.set_flag(USER, msg_id, "complete")
    report = fake.deliver(duplicate_rate=1.0)
    assert report.duplicated >= 1
    graph_world.host.drain()
    (task,) = [r for r in records(ctx.stores) if r["PartitionKey"] == "task"]
    assert task["Status"] == "closed"
    assert len([r for r in records(ctx.stores) if r["PartitionKey"] == "task"]) == 1


def test_mail_flagged_on_arrival_gets_its_task_once_it_is_filed(graph_world: GraphWorld) -> None:
    graph_world.reconfigure("    tasks: {record_type: task, on_unflag: cancel}\n")
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    msg_id = fake.add_message(USER, "inbox", mime(1), flag="flagged")
    fake.deliver()
    graph_world.host.drain()
    (task,) = [r for r in records(ctx.stores) if r["PartitionKey"] == "task"]
    assert task["F_Parent"] == "CASE-1" and task["Status"] == "new"
    fake.set_flag(USER, msg_id, "notFlagged")
    fake.deliver()
    graph_world.host.drain()
    (task,) = [r for r in records(ctx.stores) if r["PartitionKey"] == "task"]
    assert task["Status"] == "cancelled"


def tasks_of(world: GraphWorld) -> list[dict[str, object]]:
    return [r for r in records(world.ctx.stores) if r["PartitionKey"] == "task"]


def test_moving_the_linked_event_moves_the_task_dates(graph_world: GraphWorld) -> None:
    graph_world.reconfigure("    tasks: {record_type: task}\n    calendar: {create_events: true}\n")
    fake, ctx = graph_world.fake, graph_world.ctx
    assert maintain(ctx.config, ctx.stores, now()).created == 2  # mail and calendar
    msg_id = fake.add_message(USER, "inbox", mime(1))
    fake.deliver()
    graph_world.host.drain()
    start = datetime(2026, 11, 25, 9, tzinfo=UTC)
    due = datetime(2026, 11, 25, 10, tzinfo=UTC)
    fake.set_flag(USER, msg_id, "flagged", start, due)
    fake.deliver()
    graph_world.host.drain()
    (task,) = tasks_of(graph_world)
    (event,) = fake.events(USER)  # created for the task, marked as Mailfiler's
    assert task["EventId"] == event["id"] and "[TASK-1]" in event["subject"]
    fake.deliver()  # the event's own created notification: dates already match
    graph_world.host.drain()

    moved_start = datetime(2026, 12, 1, 14, tzinfo=UTC)
    moved_end = datetime(2026, 12, 1, 15, tzinfo=UTC)
    fake.move_event(USER, event["id"], moved_start, moved_end)
    fake.deliver()
    graph_world.host.drain()
    (task,) = tasks_of(graph_world)
    assert datetime.fromisoformat(str(task["F_Start"])) == moved_start
    assert datetime.fromisoformat(str(task["F_Due"])) == moved_end

    # An event of the user's own, linked by the task's token in its subject.
    own_start = datetime(2026, 12, 3, 8, tzinfo=UTC)
    own = fake.add_event(
        USER, "Call the customer [TASK-1]", own_start, own_start + timedelta(hours=2)
    )
    fake.deliver()
    graph_world.host.drain()
    (task,) = tasks_of(graph_world)
    assert datetime.fromisoformat(str(task["F_Start"])) == own_start and task["EventId"] == own
    fake.delete_event(USER, own)
    fake.deliver()
    graph_world.host.drain()
    (task,) = tasks_of(graph_world)
    assert task["EventId"] == "" and task["Status"] == "new"  # unlinked, still open


def test_reauthorization_and_a_conflicting_subscription(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    # A subscription to the same resource already exists (state lost, or an old deployment).
    mailbox = ctx.config.mailbox("m365")
    client = GraphClient(fake.base_url, provider_for(mailbox))  # type: ignore[arg-type]
    old = client.request(
        "POST",
        "subscriptions",
        json={
            "changeType": "created,updated",
            "notificationUrl": f"{graph_world.base}/graph/notifications",
            "resource": f"users/{USER}/messages",
            "expirationDateTime": (now() + timedelta(days=1)).isoformat(),
            "clientState": "from-an-old-deployment",
        },
    ).json()
    summary = maintain(ctx.config, ctx.stores, now())
    assert (summary.created, summary.failed) == (1, [])
    (sub,) = fake.subscriptions
    assert sub.id != old["id"]
    assert fake.send_lifecycle(sub.id, "reauthorizationRequired").status == 202
    graph_world.host.drain()
    assert fake.count(rf"/subscriptions/{sub.id}/reauthorize$", method="POST", status=204) == 1
    assert not fake.subscription(sub.id).reauthorization_required


def test_a_notification_that_cannot_be_persisted_is_answered_5xx(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    fake.add_message(USER, "inbox", mime(1))
    (genuine,) = fake.outbox
    ctx.stores.queues.client(GRAPH_NOTIFICATIONS).delete_queue()  # storage refuses the write
    url = f"{graph_world.base}/graph/notifications"
    assert fake.forge(url, {"value": [genuine]}).status == 503
    ctx.stores.queues.create(GRAPH_NOTIFICATIONS)
    report = fake.deliver()  # Graph delivers again; now it is kept and filed
    assert set(report.statuses) == {202}
    graph_world.host.drain()
    assert len(records(ctx.stores)) == 1


def test_concurrent_posts_share_queue_messages_and_every_notification_is_kept_once(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    maintain(ctx.config, ctx.stores, now())
    for i in range(60):
        fake.add_message(USER, "inbox", mime(i))
    report = fake.deliver(batch_size=2, concurrency=20)
    assert len(report.posts) == 30 and set(report.statuses) == {202}
    kept: list[str] = []
    messages = 0
    while batch := ctx.stores.queues.receive(
        GRAPH_NOTIFICATIONS, max_messages=32, visibility_timeout=300
    ):
        messages += len(batch)
        kept += [str(n["resource"]) for m in batch for n in unpack(m.body)]
        for message in batch:
            ctx.stores.queues.delete(GRAPH_NOTIFICATIONS, message)
    # Group commit: POSTs answered while another was being written went out together.
    assert 1 <= messages <= 30
    assert sorted(kept) == sorted(str(n["resource"]) for n in report.notifications)
    assert len(set(kept)) == 60
