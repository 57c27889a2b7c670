"""Which configuration a storage account is serving, so that two configurations never share it.

Queue messages name mailboxes and record types by name: a process reading the queues with
another configuration than the one that queued them fails them ("mailbox 'support' is not in
the configuration") until they reach a poison queue, and files the rest by other rules. So the
process that serves a storage writes the fingerprint of its configuration to one row (table
Mailboxes, PartitionKey "serving"), renews it while it runs (a heartbeat: the row says until
when it holds), and a local process whose configuration differs refuses to start while that
claim is alive. Processes with the same configuration share the claim. A claim whose holder
died expires; `--force` takes a live one over (the old holder sees it at its next heartbeat and
stops).

In Azure the function app is the only server: its poll timer renews the claim every minute and
always takes it (a deployment that changes the configuration replaces the old one, and must
never be locked out by it), so a local process pointed at the app's storage with another
configuration is refused while the app runs, and one forced over it loses the claim again
within a minute.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ServiceRequestError

from ..core.config import Config
from ..core.errors import MailfilerError
from ..store import serving as claim_row
from ..store.keys import short_hash
from ..store.stores import MAILBOXES, Stores

log = logging.getLogger(__name__)
SERVING, CLAIM = claim_row.SERVING, claim_row.CLAIM  # where the claim is (store/serving.py)
LOCAL_TTL = timedelta(seconds=90)  # a local process renews every LOCAL_BEAT
LOCAL_BEAT = 30.0
AZURE_TTL = timedelta(minutes=10)  # the app's poll timer renews every minute
_ATTEMPTS = 5


def fingerprint(config: Config) -> str:
    """The configuration as parsed (mailboxes, record types, routes, policies), hashed. It holds
    no secrets: a configuration names the app settings that hold them, never their values."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return short_hash(text, length=16)


class ConfigConflict(RuntimeError, MailfilerError):
    """The storage serves another configuration: this process must not read its queues."""


def _holder(kind: str) -> str:
    return f"{kind} {socket.gethostname()[:100]} pid {os.getpid()}"


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else "?"


def conflict_message(row: dict[str, Any], fp: str, config: Config, config_path: str) -> str:
    theirs, ours = (
        set(str(row.get("Mailboxes") or "").split(", ")),
        {m.name for m in config.mailboxes},
    )
    only_theirs = ", ".join(sorted(theirs - ours - {""})) or "none"
    only_ours = ", ".join(sorted(ours - theirs)) or "none"
    return (
        f"this storage is serving another configuration: {row.get('ConfigPath')} "
        f"(fingerprint {row.get('Fingerprint')}, registered {_iso(row.get('Since'))} by "
        f"{row.get('Holder')}, last heartbeat {_iso(row.get('HeartbeatAt'))}, claim valid until "
        f"{_iso(row.get('Until'))}); this process has {config_path} (fingerprint {fp}). "
        f"Mailboxes only there: {only_theirs}; only here: {only_ours}. Two configurations on "
        "one storage take each other's queue messages. Use a separate storage for this one: "
        "another Azurite (e.g. `node_modules/.bin/azurite --inMemoryPersistence --blobPort "
        "10010 --queuePort 10011 --tablePort 10012`) or another storage account, named by "
        "AzureWebJobsStorage in the environment or in a --settings file; or run with the same "
        "configuration; or, if that process is gone, wait for its claim to expire or pass --force."
    )


def claim(
    stores: Stores,
    config: Config,
    config_path: str,
    now: datetime,
    *,
    kind: str = "local",
    ttl: timedelta = LOCAL_TTL,
    force: bool = False,
) -> dict[str, Any]:
    """Register (or renew) this process as serving `config`; returns the claim row.

    Raises ConfigConflict when a live claim names another configuration, unless `force`.
    ETag-guarded: of two processes with different configurations starting at once, one wins."""
    table = stores.table(MAILBOXES)
    fp = fingerprint(config)
    mine = claim_row.new_claim(
        fingerprint=fp,
        config_path=config_path,
        holder=_holder(kind),
        kind=kind,
        now=now,
        until=now + ttl,
        mailboxes=", ".join(m.name for m in config.mailboxes),
        record_types=", ".join(t.name for t in config.record_types),
    )
    for _ in range(_ATTEMPTS):
        row = claim_row.read(table)
        if row is None:
            if claim_row.insert(table, mine):
                log.info("serving: %s claims the storage for %s (%s)", kind, config_path, fp)
                return mine
            continue
        until = row.get("Until")
        if not isinstance(until, datetime):
            until = now  # a row without a valid expiry holds nothing
        alive = until > now
        if row.get("Fingerprint") == fp:
            # Shared with a process of the same configuration: keep its registration, and
            # never shorten a longer claim (the app's) with a local one.
            longest = max(until, now + ttl) if alive else now + ttl
            renewed = claim_row.beat(table, row["_etag"], now, longest)
            if renewed is not None:
                return {**row, **renewed}
            continue
        if alive and not force:
            raise ConfigConflict(conflict_message(row, fp, config, config_path))
        if claim_row.replace(table, mine, row["_etag"]):
            log.warning(
                "serving: %s takes the storage over for %s (%s) from %s (%s, %s)",
                kind,
                config_path,
                fp,
                row.get("ConfigPath"),
                row.get("Fingerprint"),
                "forced" if alive else "its claim had expired",
            )
            return mine
    raise ConfigConflict(
        f"could not register {config_path} as the configuration this storage serves: "
        f"the claim row changed {_ATTEMPTS} times in a row; try again"
    )


def release(stores: Stores, config: Config, now: datetime, kind: str = "local") -> bool:
    """On a clean stop: end this process's claim now if it registered it, so another
    configuration need not wait for it to expire. A process of the same configuration still
    running renews it at its next heartbeat. True if released."""
    table = stores.table(MAILBOXES)
    row = claim_row.read(table)
    if row is None or row.get("Fingerprint") != fingerprint(config):
        return False
    if row.get("Holder") != _holder(kind):
        return False
    return claim_row.beat(table, row["_etag"], now, now) is not None


class Heartbeat:
    """Renews a local process's claim every LOCAL_BEAT seconds on a thread of its own; if
    another configuration took the storage over (--force, or the app in Azure), `on_lost` is
    called once with the reason and the beating stops."""

    def __init__(
        self,
        stores: Stores,
        config: Config,
        config_path: str,
        on_lost: Callable[[str], object],
        every: float = LOCAL_BEAT,
        ttl: timedelta = LOCAL_TTL,
    ) -> None:
        self._args = (stores, config, config_path)
        self._on_lost, self._every, self._ttl = on_lost, every, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                claim(*self._args, datetime.now(UTC), ttl=self._ttl)
            except ConfigConflict as exc:
                log.error("serving: lost the storage: %s", exc)
                self._on_lost(str(exc))
                return
            except ServiceRequestError as exc:  # storage away: expected, one line
                log.warning("serving: heartbeat failed: storage unreachable (%s)", _first(exc))
            except Exception:  # a storage hiccup: the next beat tries again before expiry
                log.exception("serving: heartbeat failed")


def _first(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0][:200]
