"""The app's storage in one place: which tables, queues and containers exist, and their names."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .account import RequestCounter, StorageAccount, StorageSettings
from .blobs import RAW_CONTAINER, Blobs
from .leases import LOCKS_CONTAINER, Slots
from .queues import Queues
from .tables import Table

INBOUND = "inbound"
FILING = "filing"
EVENTS = "events"
DELIVERIES = "deliveries"
GRAPH_NOTIFICATIONS = "graph-notifications"  # what Graph's webhook calls brought, as posted
GRAPH_FETCH = "graph-fetch"  # one message or event to read from Graph
POLLS = "polls"  # one mailbox to poll (the timer fans out, so no mailbox waits for another)
OUTBOUND = "outbound"  # one mail to send (notices, replies from a record)
TASK_CHANGES = "task-changes"  # a polled flag or calendar item changed: its task follows
QUEUES = (
    INBOUND,
    FILING,
    EVENTS,
    DELIVERIES,
    GRAPH_NOTIFICATIONS,
    GRAPH_FETCH,
    POLLS,
    TASK_CHANGES,
    OUTBOUND,
)


def poison(queue: str) -> str:
    return f"{queue}-poison"


# Table names: what each holds is described in the README ("Storage layout").
MESSAGES = "Messages"
RECORDS = "Records"
TIMELINE = "Timeline"
INGEST = "Ingest"
MAILBOXES = "Mailboxes"
ACTIONS = "MailboxActions"
CONVERSATIONS = "Conversations"
CONTACTS = "Contacts"
HELD = "Held"
RETENTION = "Retention"
GRAPH_STATE = "GraphState"
IMAP_STATE = "ImapState"
EWS_STATE = "EwsState"
NOTICES = "Notices"
AUDIT = "Audit"
DELIVERY_LOG = "EventDeliveries"
OUTBOX = "Outbox"  # PK sent|refused, RK the mail id; PK r-<recipient hash>: automatic sends
TABLES = (
    MESSAGES,
    RECORDS,
    TIMELINE,
    INGEST,
    MAILBOXES,
    ACTIONS,
    CONVERSATIONS,
    CONTACTS,
    HELD,
    RETENTION,
    GRAPH_STATE,
    IMAP_STATE,
    EWS_STATE,
    NOTICES,
    AUDIT,
    DELIVERY_LOG,
    OUTBOX,
)


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

    @classmethod
    def connect(cls, settings: StorageSettings, counter: RequestCounter | None = None) -> Stores:
        return cls(StorageAccount(settings, counter=counter))

    def table(self, name: str) -> Table:
        if name not in self._tables:
            self._tables[name] = Table(self.account.tables, name)
        return self._tables[name]

    def slots(self, name: str, size: int) -> Slots:
        """A semaphore of `size` across every worker (see leases.py)."""
        return Slots(self.account.blobs, name, size)

    def ensure(self) -> None:
        """Create what is missing, once per process (infra declares it all in Azure)."""
        with self._lock:
            if self._ensured:
                return
            for name in TABLES:
                self.table(name).create()
            for queue in QUEUES:
                self.queues.create(queue)
                self.queues.create(poison(queue))
            self.blobs.create(RAW_CONTAINER)
            self.blobs.create(LOCKS_CONTAINER)
            self._ensured = True
