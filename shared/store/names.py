"""The names of the app's queues and tables, and nothing else: the function blueprints need
them when the worker indexes the app, before any storage client is wanted (a cold start)."""

from __future__ import annotations

INBOUND = "inbound"
FILING = "filing"
EVENTS = "events"
DELIVERIES = "deliveries"
GRAPH_NOTIFICATIONS = "graph-notifications"  # what Graph's webhook calls brought, as posted
GRAPH_FETCH = "graph-fetch"  # one message or event to read from Graph
POLLS = "polls"  # one mailbox to poll (the timer fans out, so no mailbox waits for another)
OUTBOUND = "outbound"  # one mail to send (notices, replies from a record)
TASK_CHANGES = "task-changes"  # a polled flag or calendar item changed: its task follows
MAILBOX_ACTIONS = "mailbox-actions"  # one mail's after-filing actions to run (a PendingActions row)
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
    MAILBOX_ACTIONS,
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
PENDING_ACTIONS = "PendingActions"  # PK mailbox: after-filing actions, pending, done or failed
OUTBOX = "Outbox"  # PK sent|refused, RK the mail id; PK r-<recipient hash>, RK slots: the limits
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
    PENDING_ACTIONS,
)
