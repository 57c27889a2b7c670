"""Issue 5's acceptance property: message notifications, 10% duplicated, shuffled, with 5% of
Graph's answers 429, file each message exactly once; Graph's 4-request limit per mailbox holds.

Sized to prove it, not to be big: 200 messages (was 1,000, 6 minutes) are 4 delivery batches of
50 from 4 concurrent senders, some 20 duplicates and some 10 throttled fetches, while workers
contend for the mailbox's 4 slots; the floors below are the same shares of the size as before
(duplicates >= 5%, 429s >= 2%)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from shared.sources.graph.subscriptions import maintain
from shared.store.stores import QUEUES, poison

from ..helpers import filed_keys, records, timeline_entries
from .graph_setup import USER, GraphWorld, graph_world, mime

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
__all__ = ["graph_world"]
MESSAGES = 200


def test_notifications_file_each_message_once_within_graphs_limits(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    fake.concurrency_limit = 4  # Graph answers 429 ApplicationThrottled past 4 per mailbox
    assert maintain(ctx.config, ctx.stores, datetime.now(UTC)).created == 1
    for i in range(MESSAGES):
        fake.add_message(USER, "inbox", mime(i))
    assert len(fake.outbox) == MESSAGES
    throttled = fake.faults.throttle(rate=0.05, retry_after=1, path=r"/messages/")
    report = fake.deliver(batch_size=50, duplicate_rate=0.1, shuffle=True, concurrency=4, seed=5)
    assert report.failed == 0 and report.duplicated >= MESSAGES // 20
    assert set(report.statuses) == {202}
    graph_world.host.drain(timeout=900)

    entries = timeline_entries(ctx.stores, ["PartitionKey", "MessageKey"])
    per_message = Counter(e["MessageKey"] for e in entries)
    assert len(per_message) == MESSAGES and max(per_message.values()) == 1
    assert len(records(ctx.stores)) == MESSAGES
    assert len(filed_keys(ctx.stores)) == MESSAGES
    assert all(not ctx.stores.queues.depth(poison(q)) for q in QUEUES)
    assert throttled.hits >= MESSAGES // 50, "5% of the fetches were answered 429 and waited out"
    # Our slots kept the mailbox within Graph's limit: every 429 was an injected one, none
    # came from more than 4 requests at once (the fake counts a refused one in its peak).
    assert fake.count(None, status=429) == throttled.hits
    assert fake.max_concurrency[USER] <= 4
