"""Graph change notifications to work: unpack what the webhook kept, then read each message.

`graph-notifications` holds what Graph POSTed (already checked by the webhook); each message
notification becomes one `graph-fetch` job, so one slow or throttled message never holds up the
rest, and redelivered or duplicate notifications cost at most a table read. A fetch reads the
message's state, ingests it if it is new and in a watched folder (same path as polling: raw
mail to Blob Storage, then the `inbound` queue), or, for mail already ingested, turns a folder
change into a sighting so the timeline shows where the mail is now.

An `updated` notification whose version (`resourceData["@odata.etag"]`) our own PATCH or move
made costs a table read and no Graph call. While Graph has asked for a pause (429/503 with
Retry-After, noted with `note_backoff` for the whole mailbox), a fetch job calls nothing and
runs again when the pause ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..core.config import GraphMailbox
from ..core.contracts import InboundMessage
from ..sources.graph.clientstate import verified_nonce
from ..store.backoff import seconds_left
from ..store.stores import GRAPH_FETCH, GRAPH_STATE, INBOUND, INGEST
from .context import AppContext
from .graph_intake import unpack
from .ingest import queue_message, source_key
from .server_busy import note_busy

log = logging.getLogger(__name__)
BUSY_DELAY = 2  # seconds before a job whose mailbox slots were all taken runs again
MAX_ETAGS = 8  # versions a fetch job names; more (a busy message) and it simply fetches


def process_notifications(ctx: AppContext, body: bytes, now: datetime) -> dict[str, int]:
    """One webhook POST's notifications: lifecycle events handled, changes queued as fetches."""
    from ..sources.graph.state import NONCES, secret

    key = secret(ctx.config)
    if key is None:
        raise RuntimeError("graph: the client state secret is not set")
    counts = {"fetch": 0, "lifecycle": 0, "dropped": 0}
    jobs: dict[tuple[str, str, str], dict[str, Any]] = {}
    # A POST mostly carries one subscription's notifications: check and look up each
    # clientState once, not once per notification.
    rows: dict[object, dict[str, Any] | None] = {}
    for item in unpack(body):
        state = item.get("clientState")
        if state not in rows:
            nonce = verified_nonce(key, state)
            rows[state] = ctx.stores.table(GRAPH_STATE).get(NONCES, nonce) if nonce else None
        row = rows[state]
        mailbox = ctx.config.mailbox(str(row["Mailbox"])) if row else None
        if row is None or not isinstance(mailbox, GraphMailbox):
            counts["dropped"] += 1
            continue
        event = item.get("lifecycleEvent")
        if event:
            counts["lifecycle"] += 1
            _lifecycle(ctx, mailbox, str(event), str(item.get("subscriptionId", "")), now)
            continue
        data = item.get("resourceData") or {}
        item_id = data.get("id") if isinstance(data, dict) else None
        if not item_id:
            counts["dropped"] += 1
            continue
        kind = "event" if row.get("Kind") == "events" else "message"
        change = str(item.get("changeType", "updated"))
        named = data.get("@odata.etag") if isinstance(data, dict) else None
        etag = named if isinstance(named, str) and len(named) <= 512 else None
        # A created and an updated of one message in one POST: one fetch reads both. The job
        # names every version announced (our PATCH and our move often come together): if all
        # of them are ours, nothing is fetched. One without a version means a fetch.
        job = jobs.setdefault((mailbox.name, kind, str(item_id)), {"change": change, "etags": []})
        etags = job["etags"]
        if etag is None or etags is None or len(etags) >= MAX_ETAGS:
            job["etags"] = None
        elif etag not in etags:
            etags.append(etag)
    for (mailbox_name, kind, item_id), job in jobs.items():
        ctx.stores.queues.send_bytes(
            GRAPH_FETCH,
            json.dumps(
                {"v": 1, "mailbox": mailbox_name, "kind": kind, "id": item_id, **job}
            ).encode(),
        )
        counts["fetch"] += 1
    return counts


def _lifecycle(
    ctx: AppContext, mailbox: GraphMailbox, event: str, subscription_id: str, now: datetime
) -> None:
    from ..sources.graph import subscriptions

    log.info("graph: mailbox=%s lifecycle %s", mailbox.name, event)
    if event == "reauthorizationRequired":
        subscriptions.reauthorize(mailbox, subscription_id)
        return
    if event == "subscriptionRemoved":
        subscriptions.maintain(
            ctx.config, ctx.stores, now, only=mailbox.name, recreate=[subscription_id]
        )
    # subscriptionRemoved and missed: notifications were lost; delta catches up.
    request_resync(ctx, mailbox.name, now, reason=event)


def request_resync(ctx: AppContext, mailbox: str, now: datetime, *, reason: str) -> None:
    """The next poll runs delta for this mailbox, whatever its schedule."""
    ctx.stores.table(GRAPH_STATE).upsert(
        {
            "PartitionKey": mailbox,
            "RowKey": "resync",
            "Requested": True,
            "Reason": reason,
            "At": now,
        }
    )


def fetch(ctx: AppContext, body: bytes, now: datetime) -> str:
    """One message: ingest it if new, note a move or a flag if not. Returns what was done."""
    outcome = _fetch_job(ctx, body, now)
    log.info("graph fetch: %s", outcome)
    return outcome


def _fetch_job(ctx: AppContext, body: bytes, now: datetime) -> str:
    from ..sources.graph.client import GraphNotFound

    job = json.loads(body)
    mailbox = ctx.config.mailbox(str(job["mailbox"]))
    if not isinstance(mailbox, GraphMailbox) or not mailbox.enabled:
        return "mailbox gone"
    item_id = str(job["id"])
    if job.get("kind") == "event":
        return _event_job(ctx, mailbox, job, body, now)
    where = f"mailbox={mailbox.name} id={item_id[-12:]} change={job.get('change')}"
    ingest = ctx.stores.table(INGEST)
    known = ingest.get(mailbox.name, source_key(item_id))
    if known is not None and job.get("change") == "created":
        return f"{where}: duplicate"
    etags = job.get("etags")
    if known is not None and job.get("change") == "updated" and isinstance(etags, list) and etags:
        echo = _own_echo(ctx, mailbox, item_id, known, [str(e) for e in etags])
        if echo:
            return f"{where}: {echo}"
    try:
        done = _guarded(ctx, mailbox, body, now, lambda: _fetch(ctx, mailbox, job, known, now))
        return f"{where}: {done}"
    except GraphNotFound:
        return f"{where}: gone from the mailbox"


def _own_echo(
    ctx: AppContext, mailbox: GraphMailbox, item_id: str, known: dict[str, Any], etags: list[str]
) -> str | None:
    """Our own PATCH or move coming back (every version the job names is one we made):
    nothing to fetch. The folder our move put the mail in is kept on its ingest row, so a
    later move by the user is still seen as one."""
    from ..sources.graph.source import own_change

    row = own_change(ctx.stores, mailbox.name, item_id, etags)
    if row is None:
        return None
    folder = row.get("Folder")
    if isinstance(folder, str) and folder and known.get("Folder") != folder:
        ctx.stores.table(INGEST).upsert(
            {"PartitionKey": mailbox.name, "RowKey": known["RowKey"], "Folder": folder}
        )
    return "our own change, not fetched"


def _guarded(
    ctx: AppContext, mailbox: GraphMailbox, body: bytes, now: datetime, work: Callable[[], str]
) -> str:
    """Throttled by Graph, or every slot of the mailbox taken: the job runs again later
    (a delayed copy), and this delivery succeeds, so throttling never poisons a job. Graph's
    pause is noted for the mailbox: no job calls it before the pause ends."""
    from ..sources.graph.client import GraphThrottled
    from ..store.leases import SlotsBusy

    wait = seconds_left(ctx.stores, mailbox.name, now)
    if wait:
        _later(ctx, body, wait)
        return f"graph asked for a pause, again in {wait} s"
    try:
        return work()
    except GraphThrottled as exc:
        wait = note_busy(ctx.stores, mailbox.name, exc, now) or 1
        _later(ctx, body, wait)
        return f"throttled, again in {wait} s"
    except SlotsBusy:
        _later(ctx, body, BUSY_DELAY)
        return "mailbox busy, again shortly"


def _event_job(
    ctx: AppContext, mailbox: GraphMailbox, job: dict[str, Any], body: bytes, now: datetime
) -> str:
    from ..sources.registry import graph_source
    from .calendar_links import on_event

    if mailbox.calendar is None:
        return "calendar links are off"
    source = graph_source(mailbox, ctx.stores)
    where = f"mailbox={mailbox.name} event={str(job['id'])[-12:]} change={job.get('change')}"
    done = _guarded(
        ctx,
        mailbox,
        body,
        now,
        lambda: on_event(
            ctx.stores, ctx.config, mailbox, source, str(job["id"]), str(job.get("change")), now
        ),
    )
    return f"{where}: {done}"


def _later(ctx: AppContext, body: bytes, seconds: int) -> None:
    ctx.stores.queues.send_bytes(GRAPH_FETCH, body, delay_seconds=min(seconds, 3600))


def _fetch(
    ctx: AppContext,
    mailbox: GraphMailbox,
    job: dict[str, Any],
    known: dict[str, Any] | None,
    now: datetime,
) -> str:
    from ..core.tasks import Flag
    from ..sources.registry import graph_source
    from .tasks import FILING_DELAY, MAX_FILING_WAITS, NotFiledYet, sync_flag

    item_id = str(job["id"])
    source = graph_source(mailbox, ctx.stores)
    state = source.state(item_id)
    folder = source.folder_name(state.folder_id)
    if known is None:
        if state.folder_id not in source.folders().values():
            return f"not in a watched folder ({folder})"
        row = queue_message(ctx.stores, mailbox.name, source.read(item_id), now)
        ctx.stores.table(INGEST).upsert(row)
        if mailbox.tasks and state.flag_status != "notFlagged":
            # Flagged on arrival: its task needs the mail filed first.
            _later(ctx, json.dumps({**job, "change": "updated"}).encode(), FILING_DELAY)
        return "ingested"
    done = []
    if known.get("Folder") != folder and known.get("Blob"):
        # A move: the map stage sees a filed message in another folder (a sighting).
        ctx.stores.queues.send(
            INBOUND,
            InboundMessage(
                mailbox=mailbox.name,
                source_id=item_id,
                blob=str(known["Blob"]),
                folder=folder,
                received_at=state.received,
            ),
        )
        ctx.stores.table(INGEST).upsert(
            {"PartitionKey": mailbox.name, "RowKey": known["RowKey"], "Folder": folder}
        )
        done.append(f"moved to {folder}")
    if mailbox.tasks:
        flag = Flag(state.flag_status, state.flag_start, state.flag_due)
        try:
            outcome = sync_flag(
                ctx.stores,
                ctx.config,
                mailbox,
                internet_message_id=state.internet_message_id,
                flag=flag,
                now=now,
            )
            done.append(outcome.text)
            if outcome.created and mailbox.calendar and mailbox.calendar.create_events:
                from .calendar_links import create_event

                if create_event(source, ctx.stores, mailbox, outcome.created):
                    done.append("event created")
        except NotFiledYet:
            attempt = int(job.get("attempt", 0)) + 1
            if attempt > MAX_FILING_WAITS:
                log.warning("graph: mailbox=%s flag of a mail never filed", mailbox.name)
                return "flagged mail never filed; task skipped"
            _later(ctx, json.dumps({**job, "attempt": attempt}).encode(), FILING_DELAY)
            done.append("task waits for the mail to be filed")
    return "; ".join(done) or "unchanged"
