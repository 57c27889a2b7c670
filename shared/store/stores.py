"""The app's storage in one place: which tables, queues and containers exist, and their names."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from .account import Http, RequestCounter, StorageAccount, StorageSettings
from .blobs import RAW_CONTAINER, Blobs
from .leases import LOCKS_CONTAINER, Slots
from .names import (
    ACTIONS,
    AUDIT,
    CONTACTS,
    CONVERSATIONS,
    DELIVERIES,
    DELIVERY_LOG,
    EVENTS,
    EWS_STATE,
    FILING,
    GRAPH_FETCH,
    GRAPH_NOTIFICATIONS,
    GRAPH_STATE,
    HELD,
    IMAP_STATE,
    INBOUND,
    INGEST,
    MAILBOX_ACTIONS,
    MAILBOXES,
    MESSAGES,
    NOTICES,
    OUTBOUND,
    OUTBOX,
    PENDING_ACTIONS,
    POLLS,
    QUEUES,
    RECORDS,
    RETENTION,
    TABLES,
    TASK_CHANGES,
    TIMELINE,
    poison,
)
from .queues import Queues
from .tables import Table

__all__ = [
    "ACTIONS",
    "AUDIT",
    "CONTACTS",
    "CONVERSATIONS",
    "DELIVERIES",
    "DELIVERY_LOG",
    "EVENTS",
    "EWS_STATE",
    "FILING",
    "GRAPH_FETCH",
    "GRAPH_NOTIFICATIONS",
    "GRAPH_STATE",
    "HELD",
    "IMAP_STATE",
    "INBOUND",
    "INGEST",
    "MAILBOXES",
    "MAILBOX_ACTIONS",
    "MESSAGES",
    "NOTICES",
    "OUTBOUND",
    "OUTBOX",
    "PENDING_ACTIONS",
    "POLLS",
    "QUEUES",
    "RECORDS",
    "RETENTION",
    "TABLES",
    "TASK_CHANGES",
    "TIMELINE",
    "RequestCounter",
    "StorageSettings",
    "Stores",
    "poison",
]


@dataclass
class Stores:
    account: StorageAccount
    queues: Queues = field(init=False)
    blobs: Blobs = field(init=False)
    _tables: dict[str, Table] = field(default_factory=dict, init=False)
    _ensured: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    # The last record number of each type this process handed out (file stage).
    last_numbers: dict[str, int] = field(default_factory=dict, init=False)
    _number_locks: dict[str, threading.Lock] = field(default_factory=dict, init=False)

    def number_lock(self, record_type: str) -> threading.Lock:
        """Held while this process numbers a record of `record_type`."""
        with self._lock:
            return self._number_locks.setdefault(record_type, threading.Lock())

    def __post_init__(self) -> None:
        self.queues = Queues(self.account.queues)
        self.blobs = Blobs(self.account.blobs)
        # Every table client is built here, before any thread sends: building one relinks the
        # service client's shared pipeline policies (azure-data-tables 12.7 get_table_client), and a
        # request going through them meanwhile fails ("... has no attribute 'next'").
        for name in TABLES:
            self._tables[name] = Table(self.account.tables, name)

    @classmethod
    def connect(
        cls,
        settings: StorageSettings,
        counter: RequestCounter | None = None,
        *,
        http: Http = "urllib3",
    ) -> Stores:
        """`http`: the storage clients' transport ("requests" only to compare: bench)."""
        return cls(StorageAccount(settings, counter=counter, http=http))

    def table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:  # a name outside TABLES (tests): built once, under the lock
            with self._lock:
                table = self._tables.get(name)
                if table is None:
                    table = self._tables[name] = Table(self.account.tables, name)
        return table

    def slots(self, name: str, size: int) -> Slots:
        """A semaphore of `size` across every worker (see leases.py)."""
        return Slots(self.account.blobs, name, size)

    def ensure(self) -> None:
        """Create what is missing, once per process (infra declares it all in Azure)."""
        with self._lock:
            if self._ensured:
                return
            # Some 40 creates, each answered "already exists" after the first deployment: sent
            # together, a cold start waits for one round trip rather than forty.
            creates: list[Callable[[], None]] = [self.table(name).create for name in TABLES]
            for queue in QUEUES:
                creates += [
                    partial(self.queues.create, queue),
                    partial(self.queues.create, poison(queue)),
                ]
            creates += [
                partial(self.blobs.create, RAW_CONTAINER),
                partial(self.blobs.create, LOCKS_CONTAINER),
            ]
            with ThreadPoolExecutor(8) as pool:
                for done in [pool.submit(create) for create in creates]:
                    done.result()  # the first failure, as before
            self._ensured = True
