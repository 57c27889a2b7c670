"""Graph categorise never undoes what the user did meanwhile: our PATCH of the whole
`categories` list holds to the version whose categories it extends (`If-Match`), and a 412
`ErrorIrresolvableConflict` makes us read the categories again and merge ours in. Against the
fake Graph over real HTTPS, which refuses a stale If-Match as Graph does; the user's changes
land between our read and our PATCH (`edit_before_patch`) or just after our read."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from shared.core.config import GraphMailbox
from shared.core.contracts import ActionsJob, MailboxAction
from shared.sources.base import ActionResult, SourceUnavailable
from shared.sources.graph.auth import provider_for
from shared.sources.graph.client import GraphClient, GraphConflict, GraphError
from shared.sources.graph.source import PATCH_ATTEMPTS, GraphSource
from shared.sources.graph.subscriptions import maintain
from shared.stages.mailbox_actions import handle_actions
from shared.store import pending_actions
from shared.store.queues import encode
from shared.store.stores import MAILBOX_ACTIONS
from tests.fakes.graph_faults import RequestRecord

from ..helpers import filed_keys
from .graph_setup import USER, GraphWorld, graph_world, mime

pytestmark = pytest.mark.azurite
__all__ = ["graph_world"]

OURS = "Клиенты"  # what the mailbox's after_filing sets
PRIVATE, URGENT, SPAM = "Личное", "Срочно 紧急", "Спам ✉"
MESSAGE = r"/messages/[^/]+$"


def graph_source(world: GraphWorld) -> GraphSource:
    """A source of its own (a worker of its own): a client and a memory of its own."""
    mailbox = world.ctx.config.mailbox("m365")
    assert isinstance(mailbox, GraphMailbox)
    client = GraphClient(mailbox.graph_endpoint, provider_for(mailbox))
    return GraphSource(mailbox, client, world.ctx.stores)


def read_by_us(world: GraphWorld, categories: list[str]) -> tuple[str, GraphSource]:
    """A message in the inbox with `categories`, and a source that has read it, as ingest does
    (its row notes the version read)."""
    msg_id = world.fake.add_message(USER, "inbox", mime(1), categories=categories)
    source = graph_source(world)
    source.read(msg_id)
    return msg_id, source


def etag(world: GraphWorld, msg_id: str) -> str:
    return str(world.fake.message(USER, msg_id)["@odata.etag"])


def patches(world: GraphWorld) -> list[RequestRecord]:
    return [r for r in world.fake.requests if r.method == "PATCH"]


def adding(category: str) -> Callable[[list[str]], list[str]]:
    return lambda categories: [*categories, category]


def categorise(category: str = OURS) -> list[MailboxAction]:
    return [
        MailboxAction(action="mark_read"),
        MailboxAction(action="categorize", category=category),
    ]


def test_the_common_case_is_one_patch_held_to_the_version_read(graph_world: GraphWorld) -> None:
    fake = graph_world.fake
    msg_id, source = read_by_us(graph_world, [PRIVATE])
    read_as = etag(graph_world, msg_id)
    fake.clear_requests()
    results = source.apply(msg_id, categorise())
    assert [r.done for r in results] == [True, True]
    assert results[1].detail == f"category {OURS} added"
    (patch,) = patches(graph_world)
    assert (patch.status, patch.if_match) == (200, read_as)
    assert fake.count(method="GET") == 0  # our row's version was current: no extra read
    message = fake.message(USER, msg_id)
    assert message["categories"] == [PRIVATE, OURS] and message["isRead"] is True

    # Mark read alone sets one property: no condition to hold it to.
    other = fake.add_message(USER, "inbox", mime(2))
    fake.clear_requests()
    (read,) = source.apply(other, [MailboxAction(action="mark_read")])
    (patch,) = patches(graph_world)
    assert read.done and patch.if_match is None and fake.message(USER, other)["isRead"]


def test_a_category_the_user_added_after_our_read_survives_and_ours_is_added(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    msg_id, source = read_by_us(graph_world, [PRIVATE])
    read_as = etag(graph_world, msg_id)
    # The user triages the mail seconds after it arrived, between our read and our PATCH.
    fake.update_message(USER, msg_id, categories=[PRIVATE, URGENT])
    now_as = etag(graph_world, msg_id)
    fake.clear_requests()
    results = source.apply(msg_id, categorise())
    assert [r.done for r in results] == [True, True]
    first, second = patches(graph_world)
    assert (first.status, first.if_match) == (412, read_as)
    assert (second.status, second.if_match) == (200, now_as)
    assert fake.count(MESSAGE, method="GET") == 1  # the categories read again, once
    message = fake.message(USER, msg_id)
    assert message["categories"] == [PRIVATE, URGENT, OURS]
    assert message["isRead"] is True

    # The user's change racing our PATCH itself (Graph applies it first): the same.
    racing = fake.add_message(USER, "inbox", mime(2), categories=[PRIVATE])
    source.read(racing)
    fake.edit_before_patch(USER, racing, adding(URGENT))
    assert [r.done for r in source.apply(racing, categorise())] == [True, True]
    assert fake.message(USER, racing)["categories"] == [PRIVATE, URGENT, OURS]


def test_a_category_the_user_removed_is_never_put_back_from_a_stale_version(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    msg_id, source = read_by_us(graph_world, [PRIVATE, SPAM])  # our row notes both
    fake.edit_before_patch(USER, msg_id, lambda cs: [c for c in cs if c != SPAM])
    assert [r.done for r in source.apply(msg_id, categorise())] == [True, True]
    assert fake.message(USER, msg_id)["categories"] == [PRIVATE, OURS]
    assert [p.status for p in patches(graph_world)] == [412, 200]


def test_a_message_never_read_is_read_once_for_its_categories_and_etag(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    msg_id = fake.add_message(USER, "inbox", mime(1), categories=[URGENT])
    fake.clear_requests()
    results = graph_source(graph_world).apply(msg_id, categorise())  # no row about it
    assert [r.done for r in results] == [True, True]
    (get,) = [r for r in fake.requests if r.method == "GET" and "/messages/" in r.path]
    assert "categories" in get.query
    (patch,) = patches(graph_world)
    assert patch.status == 200 and patch.if_match is not None
    assert fake.message(USER, msg_id)["categories"] == [URGENT, OURS]


def test_two_workers_categorising_at_once_both_end_with_their_category(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    msg_id = fake.add_message(USER, "inbox", mime(1), categories=[PRIVATE])
    graph_source(graph_world).read(msg_id)  # both workers know the same version
    fake.clear_requests()
    # Both PATCHes reach Graph together, each held to that version: one wins, one meets 412.
    fake.faults.rendezvous(2, path=MESSAGE, method="PATCH")
    results: dict[str, list[ActionResult]] = {}

    def work(category: str) -> None:
        results[category] = graph_source(graph_world).apply(msg_id, categorise(category))

    threads = [threading.Thread(target=work, args=(c,)) for c in (OURS, URGENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert {c: [r.done for r in rs] for c, rs in results.items()} == {
        OURS: [True, True],
        URGENT: [True, True],
    }
    assert sorted(p.status for p in patches(graph_world)) == [200, 200, 412]
    categories = fake.message(USER, msg_id)["categories"]
    assert categories[0] == PRIVATE and sorted(categories[1:]) == sorted([OURS, URGENT])


def test_a_message_changing_under_every_patch_ends_in_a_clear_failure(
    graph_world: GraphWorld,
) -> None:
    fake = graph_world.fake
    msg_id, source = read_by_us(graph_world, [PRIVATE])

    def toggle(categories: list[str]) -> list[str]:  # a rule (or app) fighting over it
        return (
            [c for c in categories if c != URGENT]
            if URGENT in categories
            else [*categories, URGENT]
        )

    fake.edit_before_patch(USER, msg_id, toggle, times=1000)
    fake.clear_requests()
    with pytest.raises(GraphConflict) as failed:
        source.apply(msg_id, categorise())
    assert isinstance(failed.value, SourceUnavailable)  # transient: retried later, not dropped
    assert failed.value.status == 412 and "ErrorIrresolvableConflict" in str(failed.value)
    assert [p.status for p in patches(graph_world)] == [412] * PATCH_ATTEMPTS  # no loop
    message = fake.message(USER, msg_id)
    assert OURS not in message["categories"] and message["isRead"] is False


def test_the_actions_stage_retries_a_conflict_later_and_then_files_it(
    graph_world: GraphWorld,
) -> None:
    fake, world = graph_world.fake, graph_world
    world.reconfigure(f"    after_filing: {{mark_read: true, category: {OURS}}}\n")
    ctx = world.ctx
    maintain(ctx.config, ctx.stores, datetime.now(UTC))
    msg_id = fake.add_message(USER, "inbox", mime(1), categories=[PRIVATE])
    added = iter(f"{URGENT} {n}" for n in range(1, PATCH_ATTEMPTS + 1))
    fake.edit_before_patch(USER, msg_id, lambda cs: [*cs, next(added)], times=PATCH_ATTEMPTS)
    assert fake.deliver().failed == 0
    world.host.drain(timeout=5)  # the retry waits on the queue, delayed
    (key,) = filed_keys(ctx.stores)
    row = pending_actions.get(ctx.stores, "m365", key)
    assert row is not None and row["State"] == pending_actions.PENDING
    assert "GraphConflict" in str(row["LastError"]) and row["Attempts"] == 1
    assert ctx.stores.queues.depth(MAILBOX_ACTIONS) == 1
    message = fake.message(USER, msg_id)
    assert OURS not in message["categories"] and message["isRead"] is False

    # Later (the delayed message is due): the user's categories are all kept, ours added.
    job = ActionsJob(mailbox="m365", message_key=key, job=str(row["Job"]))
    assert handle_actions(ctx, encode(job), datetime.now(UTC)).endswith(": done")
    message = fake.message(USER, msg_id)
    users = [f"{URGENT} {n}" for n in range(1, PATCH_ATTEMPTS + 1)]
    assert message["categories"] == [PRIVATE, *users, OURS]
    assert message["isRead"] is True


def test_the_fake_refuses_a_stale_if_match_as_graph_does(graph_world: GraphWorld) -> None:
    fake = graph_world.fake
    msg_id = fake.add_message(USER, "inbox", mime(1))
    client = graph_source(graph_world).client
    path = f"users/{USER}/messages/{msg_id}"
    stale = etag(graph_world, msg_id)
    fake.update_message(USER, msg_id, categories=[URGENT])  # a new changeKey
    with pytest.raises(GraphError) as refused:
        client.request("PATCH", path, json={"categories": []}, headers={"If-Match": stale})
    assert (refused.value.status, refused.value.code) == (412, "ErrorIrresolvableConflict")
    assert "does not match the current change key" in refused.value.message
    assert fake.message(USER, msg_id)["categories"] == [URGENT]  # nothing written
    for condition in (etag(graph_world, msg_id), "*"):
        answer = client.request(
            "PATCH", path, json={"categories": [OURS]}, headers={"If-Match": condition}
        ).json()
        assert answer["categories"] == [OURS] and answer["@odata.etag"] != condition
