"""A semaphore across every worker and instance: N slots, each a blob holding a lease.

Graph allows four concurrent requests per mailbox and app; the Functions host runs several
workers on several instances. A slot is held for one short piece of work (fetching one
message: two requests) and released; a holder that dies frees its slot when the lease expires.
A process-local semaphore comes first, so a process never contends with itself for blobs.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from ..core.errors import MailfilerError
from .keys import short_hash
from .tables import Table

LOCKS_CONTAINER = "locks"
LEASE_SECONDS = 60  # Blob Storage allows 15 to 60 (or infinite)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SlotsBusy(TimeoutError, MailfilerError):
    """Every slot stayed taken for the whole wait: try again later (re-queue, not fail)."""


_local: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_local_lock = threading.Lock()


class Slots:
    def __init__(self, service: BlobServiceClient, name: str, size: int) -> None:
        self._service = service
        self.name = name
        self.size = size
        self._prefix = f"slots/{short_hash(name)}"
        with _local_lock:
            self._here = _local.setdefault((name, size), threading.BoundedSemaphore(size))

    @contextlib.contextmanager
    def hold(self, wait: float = 30.0) -> Iterator[int]:
        """One slot for the duration of the block; SlotsBusy after `wait` seconds."""
        deadline = time.monotonic() + wait
        if not self._here.acquire(timeout=wait):
            raise SlotsBusy(f"{self.name}: all {self.size} slots busy in this process")
        try:
            lease, slot = self._acquire(deadline)
            try:
                yield slot
            finally:
                with contextlib.suppress(HttpResponseError):
                    lease.release()
        finally:
            self._here.release()

    def _acquire(self, deadline: float) -> tuple[BlobLeaseClient, int]:
        delay = 0.05
        while True:
            for slot in random.sample(range(self.size), self.size):
                lease = self._try(slot)
                if lease is not None:
                    return lease, slot
            if time.monotonic() + delay > deadline:
                raise SlotsBusy(f"{self.name}: all {self.size} slots held by other workers")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    def _try(self, slot: int) -> BlobLeaseClient | None:
        blob = self._service.get_blob_client(LOCKS_CONTAINER, f"{self._prefix}/{slot}")
        for _ in range(2):
            try:
                return blob.acquire_lease(lease_duration=LEASE_SECONDS)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError, HttpResponseError):
                    blob.upload_blob(b"", overwrite=False)
            except HttpResponseError as exc:
                if exc.status_code == 409:  # leased by another worker
                    return None
                raise
        return None


def take_lease(
    table: Table, partition: str, name: str, holder: str, now: datetime, hold: timedelta
) -> bool:
    """A lease in a table row (ETag-guarded): True if `holder` now holds `name` until now +
    `hold`. Unlike blob leases (at most 60 s) it can outlast a long poll."""
    row = table.get(partition, name)
    entity = {"PartitionKey": partition, "RowKey": name, "Holder": holder, "Until": now + hold}
    if row is None:
        won = table.insert(entity) is not None
    else:
        until = row.get("Until")
        if isinstance(until, datetime) and until > now and row.get("Holder") != holder:
            return False
        won = table.update_if_unchanged(entity, row["_etag"])
    if won:
        return True
    # A write that succeeded but whose answer was lost is retried by the SDK and then reported
    # as a conflict with itself: read who holds it, or the lease is held by nobody until it
    # lapses.
    row = table.get(partition, name)
    return row is not None and row.get("Holder") == holder


def release_lease(table: Table, partition: str, name: str, holder: str, attempts: int = 3) -> None:
    """Give the lease back. Tried a few times (each with the SDK's own retries): a release lost
    to a storage fault would keep every other poller out until the lease lapses (minutes)."""
    for attempt in range(attempts):
        try:
            row = table.get(partition, name)
            if row is None or row.get("Holder") != holder:
                return
            table.update_if_unchanged(
                {"PartitionKey": partition, "RowKey": name, "Holder": "", "Until": _EPOCH},
                row["_etag"],
            )
            return
        except AzureError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
