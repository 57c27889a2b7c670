"""Group commit: callers that arrive while a write is in flight share the next write.

A webhook under load makes one storage call per POST, and that call is most of what a POST
costs. Here the first caller's item is written at once, alone, so an idle endpoint answers as
fast as before; items that arrive while it is written wait, and when the write returns, all
that are waiting (as many as fit) go in the next one. Every caller returns only once its own
item is written, and raises if that write failed, so "answer after persisting" still holds for
each of them.

Callers are coroutines on one event loop (the Functions worker runs `async def` functions on
its loop): a waiting caller holds no thread, so every POST in flight can join a write, not just
as many as the worker has threads. The write itself is a blocking storage call; it runs on a
thread of its own, one at a time, so it never queues behind other work on the loop's executor.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..core.errors import MailfilerError


class GroupWriteError(MailfilerError):
    """The shared write that carried this caller's item failed (the cause is chained)."""


_Waiting = tuple[bytes, "asyncio.Future[None]"]


class GroupCommit:
    """`write(items)` persists items in one call; `size(item)` is what an item adds to a
    write, and one write carries at most `limit` of it (a single item always goes, even if
    larger: keeping it under the limit is the caller's business). Bound to the event loop of
    its first caller."""

    def __init__(
        self,
        write: Callable[[Sequence[bytes]], None],
        *,
        limit: int,
        size: Callable[[bytes], int] = len,
    ) -> None:
        self._write = write
        self._limit = limit
        self._size = size
        self._waiting: deque[_Waiting] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="group-commit")

    @property
    def waiting(self) -> int:
        """Items not yet taken into a write."""
        return len(self._waiting)

    async def submit(self, data: bytes) -> None:
        """Return once `data` is written; raise GroupWriteError if its write failed."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._waiting.append((data, written))
        if self._writer is None:
            self._writer = loop.create_task(self._write_waiting(loop))
        await written

    async def _write_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write batches until nothing waits. A caller that gave up (cancelled) is still
        written: at least once is the contract, and the item may be half-way to storage."""
        try:
            while self._waiting:
                batch = self._take()
                try:
                    await loop.run_in_executor(
                        self._thread, self._write, [data for data, _ in batch]
                    )
                except BaseException as exc:
                    for _, written in batch:
                        _fail(written, exc)
                    if not isinstance(exc, Exception):
                        raise  # cancelled (the loop is closing) or interrupted: stop writing
                else:
                    for _, written in batch:
                        if not written.done():
                            written.set_result(None)
        finally:
            self._writer = None
            # Only when the writer was stopped: no one may wait for a write that never comes.
            while self._waiting:
                _fail(self._waiting.popleft()[1], RuntimeError("the group writer stopped"))

    def _take(self) -> list[_Waiting]:
        """The oldest waiting items that fit in one write (at least one)."""
        batch = [self._waiting.popleft()]
        used = self._size(batch[0][0])
        while self._waiting:
            more = self._size(self._waiting[0][0])
            if used + more > self._limit:
                break
            batch.append(self._waiting.popleft())
            used += more
        return batch


def _fail(written: asyncio.Future[None], cause: BaseException) -> None:
    if not written.done():
        error = GroupWriteError(str(cause) or type(cause).__name__)
        error.__cause__ = cause
        written.set_exception(error)
