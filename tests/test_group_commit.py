"""Group commit: callers (coroutines on one loop) share writes, and each returns only once its
item is written (or raises if that write failed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from shared.services.group_commit import GroupCommit, GroupWriteError

T = TypeVar("T")


class Storage:
    """A write target (called on the commit's writer thread) that can be held mid-write and
    made to fail."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.threads: set[str] = set()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail: BaseException | None = None
        self.takes = 0.0  # seconds a write takes, like a storage call

    def write(self, items: Sequence[bytes]) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(10), "the test never released the write"
        self.entered.clear()
        if self.takes:
            time.sleep(self.takes)
        if self.fail is not None:
            raise self.fail
        self.writes.append(list(items))


def run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(main(), 20))


async def entered(storage: Storage) -> None:
    """Until a write is in flight (blocked in `storage.write`)."""
    for _ in range(2000):
        if storage.entered.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no write started")


async def queued(commit: GroupCommit, count: int) -> None:
    """Until `count` items wait behind the write in flight."""
    for _ in range(2000):
        if commit.waiting >= count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{count} items never queued")


def test_a_lone_caller_writes_at_once_alone_off_the_event_loop() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)

    async def main() -> None:
        await commit.submit(b"one")
        await commit.submit(b"two")

    run(main)
    assert storage.writes == [[b"one"], [b"two"]]
    assert storage.threads and all(t.startswith("group-commit") for t in storage.threads)


def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)

    async def main() -> None:
        storage.release.clear()
        first = asyncio.create_task(commit.submit(b"first"))
        await entered(storage)
        later = [asyncio.create_task(commit.submit(f"later-{i}".encode())) for i in range(5)]
        await queued(commit, 5)
        assert not any(t.done() for t in [first, *later])  # nobody returns before its write
        storage.release.set()
        await asyncio.gather(first, *later)

    run(main)
    assert storage.writes == [[b"first"], [f"later-{i}".encode() for i in range(5)]]


def test_a_write_carries_what_fits_oldest_first() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=10)

    async def main() -> None:
        storage.release.clear()
        tasks = [asyncio.create_task(commit.submit(b"x" * 10))]
        await entered(storage)
        for name in (b"aaaa", b"bbbb", b"cccc", b"dddd"):  # 4 bytes each: two per write
            tasks.append(asyncio.create_task(commit.submit(name)))
        await queued(commit, 4)
        storage.release.set()
        await asyncio.gather(*tasks)

    run(main)
    assert storage.writes == [[b"x" * 10], [b"aaaa", b"bbbb"], [b"cccc", b"dddd"]]


def test_an_item_over_the_limit_still_goes_alone() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=4)
    run(lambda: commit.submit(b"far over four"))
    assert storage.writes == [[b"far over four"]]


def test_a_failed_write_fails_every_caller_it_carried_and_the_next_write_works() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)

    async def main() -> list[BaseException | None]:
        storage.release.clear()
        storage.fail = OSError("storage unreachable")
        tasks = [asyncio.create_task(commit.submit(b"a"))]
        await entered(storage)
        tasks += [
            asyncio.create_task(commit.submit(b"b")),
            asyncio.create_task(commit.submit(b"c")),
        ]
        await queued(commit, 2)
        storage.release.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    errors = run(main)
    assert len(errors) == 3
    for error in errors:
        assert isinstance(error, GroupWriteError) and "storage unreachable" in str(error)
        assert isinstance(error.__cause__, OSError)
    assert storage.writes == []
    storage.fail = None
    run(lambda: commit.submit(b"d"))
    assert storage.writes == [[b"d"]]


def test_many_concurrent_callers_each_item_written_exactly_once() -> None:
    storage = Storage()
    storage.takes = 0.001
    commit = GroupCommit(storage.write, limit=64)
    items = [f"{i:06d}".encode() for i in range(1000)]  # 6 bytes: up to 10 per write

    async def main() -> None:
        await asyncio.gather(*(commit.submit(item) for item in items))

    run(main)
    written = [item for write in storage.writes for item in write]
    assert written == items  # each once, in the order submitted
    assert all(sum(len(i) for i in write) <= 64 for write in storage.writes)
    assert len(storage.writes) <= len(items) // 10 + 2  # all wait at once: full writes


def test_a_caller_that_gives_up_does_not_stop_its_item_or_the_others() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)

    async def main() -> None:
        storage.release.clear()
        first = asyncio.create_task(commit.submit(b"first"))
        await entered(storage)
        quitter = asyncio.create_task(commit.submit(b"quitter"))
        stayer = asyncio.create_task(commit.submit(b"stayer"))
        await queued(commit, 2)
        quitter.cancel()
        storage.release.set()
        await asyncio.gather(first, stayer)
        assert quitter.cancelled()

    run(main)
    # At least once: the item may already be on its way to storage when its caller leaves.
    assert storage.writes == [[b"first"], [b"quitter", b"stayer"]]


def test_a_stopped_writer_releases_every_caller_and_a_new_one_takes_over() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)

    async def main() -> list[BaseException | None]:
        storage.release.clear()
        tasks = [asyncio.create_task(commit.submit(b"a"))]
        await entered(storage)
        tasks.append(asyncio.create_task(commit.submit(b"b")))
        await queued(commit, 1)
        writer = commit._writer
        assert writer is not None
        writer.cancel()  # as when the worker's loop shuts down
        outcome = list(await asyncio.gather(*tasks, return_exceptions=True))
        storage.release.set()
        await commit.submit(b"c")
        return outcome

    outcome = run(main)
    assert all(isinstance(error, GroupWriteError) for error in outcome)
    assert storage.writes[-1] == [b"c"]
