"""A subscription create answered 409 (Graph keeping one subscription per changeType and
resource, as microsoft-graph-docs-contrib#8573 documented) against the fake Graph over real
HTTPS, with the local host answering the handshakes: ours is adopted, one not verifiably ours is
deleted and made again, another deployment's is left alone; without 409 nothing changes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.sources.graph.auth import provider_for
from shared.sources.graph.client import GraphClient, GraphError
from shared.sources.graph.clientstate import make, new_nonce, verified_nonce
from shared.sources.graph.subscriptions import maintain
from shared.store import subscriptions as subscription_rows
from shared.store.keys import NONCES, subscription_row
from shared.store.stores import GRAPH_STATE

from ..helpers import records
from .graph_setup import CLIENT_STATE_SECRET, USER, GraphWorld, graph_world, mime

pytestmark = pytest.mark.azurite
__all__ = ["graph_world"]

KEY = CLIENT_STATE_SECRET.encode()
CREATE = r"/v1\.0/subscriptions$"


def now() -> datetime:
    return datetime.now(UTC)


def client_of(world: GraphWorld) -> GraphClient:
    mailbox = world.ctx.config.mailbox("m365")
    return GraphClient(world.fake.base_url, provider_for(mailbox))  # type: ignore[arg-type]


def subscribe(world: GraphWorld, client_state: str, url: str | None = None) -> dict[str, Any]:
    """What another pass, deployment or secret made: the mailbox's resource, straight at Graph."""
    body = {
        "changeType": "created,updated",
        "notificationUrl": url or f"{world.base}/graph/notifications",
        "resource": f"users/{USER}/messages",
        "expirationDateTime": (now() + timedelta(days=1)).isoformat(),
        "clientState": client_state,
    }
    made: dict[str, Any] = client_of(world).request("POST", "subscriptions", json=body).json()
    return made


def test_the_fake_answers_409_in_graphs_error_shape_only_when_asked(
    graph_world: GraphWorld,
) -> None:
    first = subscribe(graph_world, "one")
    second = subscribe(graph_world, "two")  # the default: a second id, both kept
    assert second["id"] != first["id"] and len(graph_world.fake.subscriptions) == 2
    graph_world.fake.subs.conflict_on_duplicate = True
    with pytest.raises(GraphError) as caught:
        subscribe(graph_world, "three")
    # The client reads code and message from {"error": {"code", "message"}}.
    assert (caught.value.status, caught.value.code) == (409, "ExtensionError")
    assert "Status Code: Conflict" in caught.value.message
    assert len(graph_world.fake.subscriptions) == 2


def test_without_409_a_lost_row_means_a_second_subscription_as_before(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    assert maintain(ctx.config, ctx.stores, now()).created == 1
    subscription_rows.remove(ctx.stores.table(GRAPH_STATE), subscription_row("m365", "mail"))
    again = maintain(ctx.config, ctx.stores, now())
    assert (again.created, again.adopted, again.retired, again.failed) == (1, 0, 0, [])
    assert len(fake.subscriptions) == 2
    assert fake.count(CREATE, method="POST", status=409) == 0


def test_a_409_for_our_own_subscription_adopts_it_after_a_lost_row(
    graph_world: GraphWorld, caplog: pytest.LogCaptureFixture
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    fake.subs.conflict_on_duplicate = True
    assert maintain(ctx.config, ctx.stores, now()).created == 1
    (sub,) = fake.subscriptions
    table = ctx.stores.table(GRAPH_STATE)
    subscription_rows.remove(table, subscription_row("m365", "mail"))  # the nonce row stays
    caplog.set_level(logging.INFO, "shared.sources.graph")
    summary = maintain(ctx.config, ctx.stores, now())
    assert (summary.adopted, summary.created, summary.recreated) == (1, 0, 0)
    assert (summary.retired, summary.failed) == (0, [])
    assert fake.count(CREATE, method="POST", status=409) == 1
    assert fake.count(r"/subscriptions/", method="DELETE") == 0
    (kept,) = fake.subscriptions
    assert kept.id == sub.id
    row = subscription_rows.get(table, "m365", "mail")
    assert row is not None and row["Status"] == "active" and row["SubscriptionId"] == sub.id
    assert row["Nonce"] == verified_nonce(KEY, sub.client_state)
    assert abs(row["Expires"] - sub.expiration) < timedelta(seconds=1)  # what Graph reports
    # The nonce written for the create that made nothing is gone; the adopted one is indexed.
    nonces = {r["RowKey"]: r for r in table.partition(NONCES)}
    assert set(nonces) == {row["Nonce"]} and nonces[row["Nonce"]]["SubscriptionId"] == sub.id
    (line,) = [r for r in caplog.records if "409" in r.getMessage()]
    assert "mailbox=m365" in line.getMessage() and f"users/{USER}/messages" in line.getMessage()
    assert line.exc_info is None
    # The adopted subscription's notifications are accepted and filed.
    fake.add_message(USER, "inbox", mime(1))
    report = fake.deliver()
    assert report.failed == 0 and set(report.statuses) == {202}
    graph_world.host.drain()
    assert [r["Title"] for r in records(ctx.stores)] == ["Question 1"]
    # The next pass sees a current row: no create, no 409.
    steady = maintain(ctx.config, ctx.stores, now())
    assert (steady.created, steady.adopted, steady.failed) == (0, 0, [])
    assert fake.count(CREATE, method="POST", status=409) == 1


def test_an_adopted_subscription_near_its_expiry_is_renewed(graph_world: GraphWorld) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    fake.subs.conflict_on_duplicate = True
    maintain(ctx.config, ctx.stores, now())
    (sub,) = fake.subscriptions
    before = sub.expiration
    table = ctx.stores.table(GRAPH_STATE)
    subscription_rows.remove(table, subscription_row("m365", "mail"))
    summary = maintain(ctx.config, ctx.stores, now() + timedelta(days=6))  # within 2 days of it
    assert (summary.adopted, summary.renewed, summary.failed) == (1, 1, [])
    assert fake.subscription(sub.id).renewed == 1 and fake.subscription(sub.id).expiration > before
    row = subscription_rows.get(table, "m365", "mail")
    assert row is not None and row["SubscriptionId"] == sub.id and row["Expires"] > before


@pytest.mark.parametrize(
    "client_state",
    [
        pytest.param("from-an-old-deployment", id="unsigned"),
        pytest.param(make(b"a-retired-secret", new_nonce()), id="retired-secret"),
        pytest.param(make(KEY, new_nonce()), id="unknown-nonce"),
    ],
)
def test_a_409_for_one_not_verifiably_ours_deletes_it_and_creates_again(
    graph_world: GraphWorld, client_state: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    fake.subs.conflict_on_duplicate = True
    old = subscribe(graph_world, client_state)
    caplog.set_level(logging.INFO, "shared.sources.graph")
    summary = maintain(ctx.config, ctx.stores, now())
    assert (summary.created, summary.retired, summary.adopted, summary.failed) == (1, 1, 0, [])
    assert fake.count(CREATE, method="POST", status=409) == 1
    assert fake.count(rf"/subscriptions/{old['id']}$", method="DELETE", status=204) == 1
    (sub,) = fake.subscriptions
    assert sub.id != old["id"]
    row = subscription_rows.get(ctx.stores.table(GRAPH_STATE), "m365", "mail")
    assert row is not None and row["Status"] == "active" and row["SubscriptionId"] == sub.id
    assert row["Nonce"] == verified_nonce(KEY, sub.client_state)
    (line,) = [r for r in caplog.records if "409" in r.getMessage()]
    assert "mailbox=m365" in line.getMessage() and f"users/{USER}/messages" in line.getMessage()
    assert line.exc_info is None


def test_a_409_for_another_deployments_subscription_fails_and_leaves_it_alone(
    graph_world: GraphWorld,
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    fake.subs.conflict_on_duplicate = True
    # Same app, same resource, another notification URL (its query string makes it another).
    other = subscribe(graph_world, "staging", f"{graph_world.base}/graph/notifications?d=staging")
    summary = maintain(ctx.config, ctx.stores, now())
    assert summary.created == 0 and [m for m, _ in summary.failed] == ["m365"]
    assert "409" in summary.failed[0][1]
    assert [s.id for s in fake.subscriptions] == [other["id"]]
    assert fake.count(r"/subscriptions/", method="DELETE") == 0
    row = subscription_rows.get(ctx.stores.table(GRAPH_STATE), "m365", "mail")
    assert row is not None and row["Status"] == "failing" and "409" in row["LastError"]


def test_a_409_after_the_secret_rotated_replaces_the_old_subscription_once(
    graph_world: GraphWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, ctx = graph_world.fake, graph_world.ctx
    fake.subs.conflict_on_duplicate = True
    maintain(ctx.config, ctx.stores, now())
    (old,) = fake.subscriptions
    monkeypatch.setenv("GRAPH_CLIENT_STATE_SECRET", "a-new-secret")
    rotated = maintain(ctx.config, ctx.stores, now())
    # The create meets the old one (its row names it), deletes it once, and makes the new one.
    assert (rotated.recreated, rotated.retired, rotated.failed) == (1, 1, [])
    assert fake.count(CREATE, method="POST", status=409) == 1
    assert fake.count(r"/subscriptions/", method="DELETE") == 1
    (sub,) = fake.subscriptions
    assert sub.id != old.id and verified_nonce(b"a-new-secret", sub.client_state) is not None
    row = subscription_rows.get(ctx.stores.table(GRAPH_STATE), "m365", "mail")
    assert row is not None and row["SubscriptionId"] == sub.id
