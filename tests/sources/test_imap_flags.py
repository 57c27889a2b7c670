"""\\Flagged on IMAP becomes a task: with CONDSTORE (Dovecot's default) and without it (the
bounded rescan window), against a real Dovecot and Azurite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.services.context import set_context
from shared.services.ingest import ingest_mailbox
from shared.sources.imap.source import ImapSource
from shared.store.cursors import Cursors
from shared.store.stores import Stores
from tests.fakes.dovecot import Dovecot, require_dovecot

from ..helpers import records
from .test_imap import PASSWORD, USER, World, mail

pytestmark = pytest.mark.azurite
FLAGGED = b"\\Flagged"
# Dovecot's own list without CONDSTORE and QRESYNC: a server that reports no flag changes.
WITHOUT_CONDSTORE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT NAMESPACE UIDPLUS LIST-EXTENDED "
    "ESEARCH SEARCHRES LIST-STATUS BINARY MOVE LITERAL+"
)
TASKS = "    tasks: {record_type: task}\n"


def tasks(stores: Stores) -> dict[str, dict[str, object]]:
    """Task records by the Message-ID number of their mail (`<imap-N@...>` -> N)."""
    out = {}
    for row in records(stores):
        if row["PartitionKey"] == "task":
            out[str(row["Title"]).rsplit(" ", 1)[-1]] = row
    return out


def world_with(capability: str, stores: Stores, azurite: Azurite, tmp: Path) -> Iterator[World]:
    require_dovecot()
    with Dovecot(capability=capability, users={USER: PASSWORD}) as server:
        yield World(server, stores, azurite, tmp)
    set_context(None)


@pytest.fixture
def condstore_world(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setenv("IMAP_TEST_PASSWORD", PASSWORD)
    yield from world_with("+MOVE", stores, azurite, tmp_path)


@pytest.fixture
def plain_world(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setenv("IMAP_TEST_PASSWORD", PASSWORD)
    yield from world_with(WITHOUT_CONDSTORE, stores, azurite, tmp_path)


def configure(world: World, extra: str = "") -> None:
    world.configure(
        extra=TASKS + extra,
        types="[{name: case, prefix: CASE}, {name: task, prefix: TASK}]",
    )


def set_flag(world: World, n: int, on: bool) -> None:
    with world.client() as client:
        client.select_folder("INBOX")
        (uid,) = client.search(["HEADER", "Message-ID", f"<imap-{n}@example.org>"])
        (client.add_flags if on else client.remove_flags)([uid], [FLAGGED], silent=True)


def idle_commands(world: World) -> int:
    source = world.ctx.source("imap")
    assert isinstance(source, ImapSource)
    summary = ingest_mailbox(
        world.stores,
        "imap",
        source,
        now=datetime.now(UTC),
        cursors=Cursors(world.stores, "imap", "imap"),
    )
    assert summary.queued == 0 and summary.changes == 0
    return source.commands


def test_flags_follow_with_condstore_and_an_idle_poll_stays_at_three_commands(
    condstore_world: World,
) -> None:
    world = condstore_world
    configure(world)
    with world.client() as client:
        for n in range(3):
            client.append("INBOX", mail(n), flags=[FLAGGED] if n == 1 else [])
    assert world.poll() == "queued 3"
    world.host.drain()
    found = tasks(world.stores)
    assert set(found) == {"1"}, found  # flagged on arrival
    assert found["1"]["F_Parent"] and found["1"]["Status"] == "new"
    assert idle_commands(world) == 3  # LOGIN, STATUS (with HIGHESTMODSEQ), LOGOUT

    set_flag(world, 2, True)
    set_flag(world, 1, False)
    assert world.poll() == "queued 0"
    world.host.drain()
    found = tasks(world.stores)
    assert set(found) == {"1", "2"}
    assert found["1"]["Status"] == "closed" and found["2"]["Status"] == "new"
    assert idle_commands(world) == 3

    # \Seen changes move HIGHESTMODSEQ too, but change no task.
    with world.client() as client:
        client.select_folder("INBOX")
        client.add_flags(client.search(["ALL"]), [b"\\Seen"], silent=True)
    assert world.poll() == "queued 0"
    world.host.drain()
    assert {k: v["Status"] for k, v in tasks(world.stores).items()} == {"1": "closed", "2": "new"}


def test_without_condstore_the_newest_messages_are_rescanned_in_five_commands(
    plain_world: World,
) -> None:
    world = plain_world
    configure(world, "    flag_rescan: 3\n")
    world.append([mail(n) for n in range(5)])
    assert world.poll() == "queued 5"
    world.host.drain()
    assert tasks(world.stores) == {}
    assert idle_commands(world) == 5  # LOGIN, STATUS, SELECT, FETCH FLAGS, LOGOUT

    set_flag(world, 4, True)  # inside the window of the newest 3
    set_flag(world, 0, True)  # outside it: not seen, as documented
    assert world.poll() == "queued 0"
    world.host.drain()
    assert set(tasks(world.stores)) == {"4"}
    set_flag(world, 4, False)
    assert world.poll() == "queued 0"
    world.host.drain()
    assert tasks(world.stores)["4"]["Status"] == "closed"
    assert idle_commands(world) == 5


def test_turning_tasks_on_takes_todays_flags_as_the_baseline(condstore_world: World) -> None:
    world = condstore_world
    world.append([mail(n) for n in range(3)])
    set_flag(world, 0, True)
    assert world.poll() == "queued 3"  # no tasks configured yet
    world.host.drain()
    configure(world)
    assert world.poll() == "queued 0"  # the baseline: mail flagged before is not a new flag
    world.host.drain()
    assert tasks(world.stores) == {}
    set_flag(world, 0, False)
    set_flag(world, 2, True)
    assert world.poll() == "queued 0"
    world.host.drain()
    assert set(tasks(world.stores)) == {"2"}
