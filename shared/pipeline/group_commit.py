"""Group commit: callers that arrive while a write is in flight share the next write.

A webhook under load makes one storage call per POST, and that call is most of what a POST
costs. Here the first caller writes at once, alone, so an idle endpoint answers as fast as
before; callers that arrive while it writes queue up, and when the write returns, the first of
them writes all that are waiting (as many as fit) in one call. Every caller returns only once
its own item is written, and raises if that write failed, so "answer after persisting" still
holds for each of them. No background thread: it works the same in a Functions worker, a test
and the local host.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class GroupWriteError(Exception):
    """The shared write that carried this caller's item failed (the cause is chained)."""


@dataclass(eq=False)
class _Item:
    data: bytes
    done: bool = False
    error: BaseException | None = None


class GroupCommit:
    """`write(items)` persists items in one call; `size(item)` is what an item adds to a
    write, and one write carries at most `limit` of it (a single item always goes, even if
    larger: keeping it under the limit is the caller's business)."""

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
        self._waiting: deque[_Item] = deque()
        self._writing = False
        self._changed = threading.Condition()

    def submit(self, data: bytes) -> None:
        """Return once `data` is written; raise GroupWriteError if its write failed."""
        mine = _Item(data)
        with self._changed:
            self._waiting.append(mine)
        while True:
            with self._changed:
                while not mine.done and self._writing:
                    self._changed.wait()
                if mine.done:
                    break
                batch = self._take()
                self._writing = True
            error: BaseException | None = None
            try:
                self._write([item.data for item in batch])
            except BaseException as exc:  # whatever it was, the waiters must hear of it
                error = exc
            with self._changed:
                for item in batch:
                    item.done, item.error = True, error
                self._writing = False
                self._changed.notify_all()
            if error is not None and not isinstance(error, Exception):
                # KeyboardInterrupt, SystemExit: not ours to turn into an error. Our own item,
                # if this write did not carry it, leaves with us rather than be written later.
                with self._changed:
                    if not mine.done:
                        self._waiting.remove(mine)
                raise error
        if mine.error is not None:
            raise GroupWriteError(str(mine.error)) from mine.error

    def _take(self) -> list[_Item]:
        """The oldest waiting items that fit in one write (at least one). Under the lock."""
        batch = [self._waiting.popleft()]
        used = self._size(batch[0].data)
        while self._waiting:
            more = self._size(self._waiting[0].data)
            if used + more > self._limit:
                break
            batch.append(self._waiting.popleft())
            used += more
        return batch
