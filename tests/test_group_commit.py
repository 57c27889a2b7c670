"""Group commit: concurrent callers share writes, and each returns only once its item is
written (or raises if that write failed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.pipeline.group_commit import GroupCommit, GroupWriteError


class Storage:
    """A write target that can be held mid-write and made to fail."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail: BaseException | None = None
        self.lock = threading.Lock()
        self.takes = 0.0  # seconds a write takes, like a storage call

    def write(self, items: Sequence[bytes]) -> None:
        self.entered.set()
        assert self.release.wait(10), "the test never released the write"
        if self.takes:
            time.sleep(self.takes)
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.writes.append(list(items))


def wait_for_waiters(commit: GroupCommit, count: int) -> None:
    """Until `count` callers queue behind the write in flight."""
    for _ in range(1000):
        with commit._changed:
            if len(commit._waiting) >= count:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"{count} callers never queued")


def test_a_lone_caller_writes_at_once_alone() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)
    commit.submit(b"one")
    commit.submit(b"two")
    assert storage.writes == [[b"one"], [b"two"]]


def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)
    storage.release.clear()
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(commit.submit, b"first")
        assert storage.entered.wait(5)
        later = [pool.submit(commit.submit, f"later-{i}".encode()) for i in range(5)]
        wait_for_waiters(commit, 5)
        assert not any(f.done() for f in [first, *later])  # nobody returns before its write
        storage.release.set()
        for future in [first, *later]:
            future.result(timeout=10)
    assert storage.writes[0] == [b"first"]
    assert len(storage.writes) == 2
    assert sorted(storage.writes[1]) == sorted(f"later-{i}".encode() for i in range(5))


def test_a_write_carries_what_fits_oldest_first() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=10)
    storage.release.clear()
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(commit.submit, b"x" * 10)
        assert storage.entered.wait(5)
        queued = []
        for name in (b"aaaa", b"bbbb", b"cccc", b"dddd"):  # 4 bytes each: two per write
            queued.append(pool.submit(commit.submit, name))
            wait_for_waiters(commit, len(queued))
        storage.release.set()
        for future in [first, *queued]:
            future.result(timeout=10)
    assert storage.writes == [[b"x" * 10], [b"aaaa", b"bbbb"], [b"cccc", b"dddd"]]


def test_an_item_over_the_limit_still_goes_alone() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=4)
    commit.submit(b"far over four")
    assert storage.writes == [[b"far over four"]]


def test_a_failed_write_fails_every_caller_it_carried_and_the_next_write_works() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)
    storage.release.clear()
    storage.fail = OSError("storage unreachable")
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(commit.submit, b"a")]
        assert storage.entered.wait(5)
        futures += [pool.submit(commit.submit, b"b"), pool.submit(commit.submit, b"c")]
        wait_for_waiters(commit, 2)
        storage.release.set()
        for future in futures:
            with pytest.raises(GroupWriteError, match="storage unreachable") as info:
                future.result(timeout=10)
            assert isinstance(info.value.__cause__, OSError)
    assert storage.writes == []
    storage.fail = None
    commit.submit(b"d")
    assert storage.writes == [[b"d"]]


def test_many_concurrent_callers_each_item_written_exactly_once() -> None:
    storage = Storage()
    storage.takes = 0.001
    commit = GroupCommit(storage.write, limit=64)
    items = [f"{i:06d}".encode() for i in range(1000)]  # 6 bytes: up to 10 per write
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(commit.submit, items))
    written = [item for write in storage.writes for item in write]
    assert sorted(written) == items
    assert all(sum(len(i) for i in write) <= 64 for write in storage.writes)
    assert len(storage.writes) < len(items)  # 32 callers at once do share writes


def test_an_interrupted_write_still_releases_the_callers_waiting_on_it() -> None:
    storage = Storage()
    commit = GroupCommit(storage.write, limit=100)
    storage.release.clear()
    storage.fail = KeyboardInterrupt()
    with ThreadPoolExecutor(2) as pool:
        leader = pool.submit(commit.submit, b"a")
        assert storage.entered.wait(5)
        follower = pool.submit(commit.submit, b"b")
        wait_for_waiters(commit, 1)
        storage.release.set()
        with pytest.raises(KeyboardInterrupt):
            leader.result(timeout=10)
        # Not stuck behind the interrupted write: it made its own, which met the same fate.
        with pytest.raises(KeyboardInterrupt):
            follower.result(timeout=10)
    assert storage.writes == []
    storage.fail = None
    commit.submit(b"c")
    assert storage.writes == [[b"c"]]
