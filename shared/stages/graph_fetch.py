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
from ..services.context import AppContext
from ..services.ingest import queue_message
from ..services.server_busy import note_busy
from ..store import ingest_notes
from ..store.backoff import seconds_left
from ..store.stores import GRAPH_FETCH, INBOUND, INGEST

log = logging.getLogger(__name__)
BUSY_DELAY = 2  # seconds before a job whose mailbox slots were all taken runs again


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
    known = ingest_notes.get(ingest, mailbox.name, item_id)
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
        ingest_notes.set_folder(ctx.stores.table(INGEST), mailbox.name, known["RowKey"], folder)
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
    from ..services.calendar_links import on_event
    from ..sources.registry import graph_source

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
    from ..services.tasks import FILING_DELAY, MAX_FILING_WAITS, NotFiledYet, sync_flag
    from ..sources.registry import graph_source

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
        ingest_notes.set_folder(ctx.stores.table(INGEST), mailbox.name, known["RowKey"], folder)
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
                from ..services.calendar_links import create_event

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


STAGE = "graph-fetch"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `graph-fetch` (called by its trigger: functions/stage.py)."""
    return fetch(ctx, body, now)
