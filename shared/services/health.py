"""One health report for `/api/health`, `mailfiler status` and the telemetry timer: storage,
queue depths, poison counts, held mail, and per mailbox its polls, subscriptions, how long
its credentials have left, its mail whose after-filing actions are pending or failed, and the
server's back-off."""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ServiceRequestError

from ..core.config import EwsMailbox, GraphMailbox, ImapMailbox, ImapOAuth, Mailbox
from ..store import pending_actions
from ..store.backoff import backoff_until
from ..store.stores import HELD, QUEUES, Stores, poison
from .context import AppContext
from .mailboxes import mailbox_status

log = logging.getLogger(__name__)
HELD_COUNT_CAP = 1000
CERTIFICATE_WARNING_DAYS = 30


def health_report(ctx: AppContext, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    body: dict[str, Any] = {
        "status": "ok",
        "held": 0,
        "storage": {"reachable": True},
        "queues": {},
        "mailboxes": {},
    }
    if not storage_answers(ctx.stores):  # at once, not after the SDK's minutes of retries
        return unreachable_report(ctx.stores, ServiceRequestError("connection refused"))
    try:
        for name in QUEUES:
            body["queues"][name] = ctx.stores.queues.depth(name)
            body["queues"][poison(name)] = ctx.stores.queues.depth(poison(name))
        mailboxes = mailbox_status(ctx, now)
        for mailbox in ctx.config.mailboxes:
            entry = mailboxes.get(mailbox.name)
            if entry is None:
                continue
            _actions_and_backoff(ctx, mailbox.name, entry, now)
            if not mailbox.enabled:
                continue
            expires = certificate_expiry(mailbox)
            if expires is not None:
                entry["credential_expires"] = expires.isoformat()
                days = (expires - now).total_seconds() / 86400
                if days < CERTIFICATE_WARNING_DAYS:
                    entry["warnings"].append(
                        f"the app's certificate expires on {expires:%Y-%m-%d}"
                        if days > 0
                        else f"the app's certificate expired on {expires:%Y-%m-%d}"
                    )
        body["mailboxes"] = mailboxes
        # Mail the rate limit held back, waiting for an operator (counted up to a cap).
        held = ctx.stores.table(HELD).all(select=["PartitionKey"])
        body["held"] = sum(1 for _ in islice(held, HELD_COUNT_CAP))
    except Exception as exc:
        return unreachable_report(ctx.stores, exc)
    if any(m["status"] == "failing" or m["warnings"] for m in body["mailboxes"].values()):
        body["status"] = "degraded"
    if any(body["queues"][poison(q)] for q in QUEUES):
        body["status"] = "degraded"
    return body


def storage_endpoint(stores: Stores) -> str:
    """The storage account as an operator names it (its table service's URL, no secrets)."""
    try:
        return str(stores.account.tables.url).split("?", 1)[0].rstrip("/")
    except ValueError:  # a connection string the SDK cannot read
        return "the configured storage account"


def storage_answers(stores: Stores, timeout: float = 3.0) -> bool:
    """Whether the storage's table service accepts a connection: one TCP connect, no retry, so
    a stopped emulator is said in seconds."""
    parts = urlsplit(storage_endpoint(stores))
    if not parts.hostname:
        return True  # cannot tell: let the real requests say
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def unreachable_report(stores: Stores, exc: BaseException) -> dict[str, Any]:
    """The report when the storage cannot be read. A connection that fails is expected (the
    emulator is not running, the network is down): one log line. Anything else is a bug or a
    refusal worth its traceback."""
    endpoint = storage_endpoint(stores)
    if isinstance(exc, ServiceRequestError):
        error = f"storage unreachable at {endpoint}"
        log.warning("health: %s", error)
    else:
        first = (str(exc) or type(exc).__name__).splitlines()[0][:300]
        error = f"storage at {endpoint} failed: {type(exc).__name__}: {first}"
        log.exception("health: %s", error)
    return {
        "status": "unhealthy",
        "held": 0,
        "storage": {"reachable": False, "endpoint": endpoint, "error": error},
        "queues": {},
        "mailboxes": {},
    }


def _actions_and_backoff(ctx: AppContext, name: str, entry: dict[str, Any], now: datetime) -> None:
    """Mail whose after-filing actions wait or failed (store/pending_actions.py), and the
    server's back-off if one runs. Failed actions are a warning: the mail sits unmoved."""
    actions = pending_actions.counts(ctx.stores, name)
    entry["actions_pending"] = actions["pending"]
    entry["actions_failed"] = actions["failed"]
    if actions["failed"]:
        entry["warnings"].append(
            f"{actions['failed']} mails whose after-filing actions failed "
            "(mailfiler poison list mailbox-actions)"
        )
    until = backoff_until(ctx.stores, name, now)
    entry["backoff_until"] = until.isoformat() if until else None


def certificate_expiry(mailbox: Mailbox) -> datetime | None:
    """When the certificate an app-only mailbox signs in with stops working (its notAfter)."""
    holder: Any = mailbox
    if (isinstance(mailbox, ImapMailbox) and isinstance(mailbox.oauth, ImapOAuth)) or (
        isinstance(mailbox, EwsMailbox) and mailbox.oauth is not None
    ):
        holder = mailbox.oauth
    elif not isinstance(mailbox, GraphMailbox):
        return None
    if getattr(holder, "auth", None) != "certificate":
        return None
    pem = os.environ.get(getattr(holder, "certificate_setting", None) or "")
    if not pem:
        return None
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return None
    return min(c.not_valid_after_utc for c in certificates) if certificates else None


def expiry_hours(report: dict[str, Any], now: datetime) -> dict[str, float]:
    """Per mailbox, the hours until its nearest expiry: a Graph subscription, or a certificate."""
    out: dict[str, float] = {}
    for name, entry in report.get("mailboxes", {}).items():
        moments = [entry.get("credential_expires")]
        moments += [s.get("expires") for s in (entry.get("subscriptions") or {}).values()]
        hours = [
            (datetime.fromisoformat(m) - now).total_seconds() / 3600
            for m in moments
            if isinstance(m, str)
        ]
        if hours:
            out[name] = min(hours)
    return out
