"""Map: parse the raw mail, gather what storage knows about it, decide, and queue the plans."""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..core.attachments import check
from ..core.classify import Classification, classify
from ..core.config import Config
from ..core.contracts import (
    BUNDLE_MAILS,
    MAX_ENTRY_ATTACHMENTS,
    TEXT_INLINE,
    AttachmentInfo,
    FilingPlan,
    InboundMessage,
    RecordRef,
)
from ..core.decide import (
    Contact,
    FiledMessage,
    Known,
    RecordInfo,
    decide,
    known_order,
    lookups,
    own_mail,
)
from ..core.logtext import log_key, log_mail
from ..core.message import MailMessage, id_key
from ..core.mime import iter_attachments
from ..core.plan_fit import fit_plan, plan_bytes
from ..core.reply_text import reply_text
from ..core.rules import match_routes
from ..core.signing import REF_HEADER, verify_message_id, verify_ref_header
from ..services.context import AppContext
from ..services.inbound import bundle_of, parse_inbound
from ..store import contacts, conversations, numbers, records, timeline
from ..store import messages as message_rows
from ..store.claims_fill import claims_complete
from ..store.keys import contact_partition
from ..store.queues import decode, encode
from ..store.record_index import index_row
from ..store.sender_slots import SenderSlots, sender_rows
from ..store.stores import (
    CONTACTS,
    FILING,
    INBOUND,
    Stores,
)
from ..store.tables import Entity

log = logging.getLogger(__name__)
# The file stage's handler of a `filing` message body, at a moment (joined in functions/).
Filer = Callable[[bytes, datetime], object]
SNIFF_BYTES = 4096  # what the attachment check reads of the content


@dataclass(frozen=True)
class OrderWait:
    """How long mail waits for the mail it refers to while that is ingested but not yet filed:
    put back on the inbound queue with the queue's own visibility delay (never a sleep in the
    worker), doubling from `delay_seconds` up to `max_delay_seconds`, at most `max_waits` times
    (about 25 minutes by default); then it is decided without it, and its reasons say so."""

    delay_seconds: int = 2
    max_delay_seconds: int = 120
    max_waits: int = 18

    def delay(self, waits: int) -> int:
        return int(min(self.delay_seconds * 2 ** min(waits, 20), self.max_delay_seconds))


ORDER_WAIT = OrderWait()


def _in_flight(stores: Stores) -> int:
    """Mail on its way through map and file (approximate counts, which include messages
    leased, this one usually among them, or waiting out a delay): each mail creates at most
    one record of a type, and numbers are handed out without gaps, so a token's number above
    the highest one given out may still come from one of them. An inbound message may be a
    bundle: counted as a full one (waiting a little too long is bounded; not waiting for a
    record still on its way would open another)."""
    inbound = (stores.queues.depth(INBOUND) or 0) * BUNDLE_MAILS
    return inbound + (stores.queues.depth(FILING) or 0)


def gather(
    stores: Stores,
    config: Config,
    message: MailMessage,
    classification: Classification,
    arrival: datetime,
    signing_keys: Sequence[bytes] = (),
    *,
    may_wait: bool = False,
    dedupe: bool = True,
    names: dict[RecordRef, str] | None = None,
    index_rows: dict[RecordRef, str] | None = None,
) -> tuple[Known, SenderSlots | None, tuple[str, ...]]:
    """Read what the decision needs, the sender's rate-limit slots around the mail's arrival
    (None when its sender is not limited), and what it refers to that is ingested but not yet
    filed (a record token not yet numbered while mail is on its way). With `may_wait`, the
    first such reference that could change the decision ends the search: the caller puts the
    mail back to wait. Searches stop at the first hit where the decision takes the first one
    (tokens, thread references newest first), so a reply usually costs one read. Without
    `dedupe`, the message index is not read: the caller learns whether the mail is filed from
    its claim (`_claimed`). `names` gets the display id of each record whose row was read,
    `index_rows` its newest-first index RowKey (CreatedAt and number never change)."""
    filed = _filed(stores, message.key) if dedupe else None
    if filed is not None:
        return Known(filed=filed), None, ()
    need = lookups(message, config, classification)
    kind = classification.kind
    # Mail its class drops is decided by its class alone: nothing to wait for.
    wanted = kind == "human" or getattr(config.classes, kind, "file") != "drop"
    pending: list[str] = []
    prefixes = {t.prefix: t.name for t in config.record_types}
    tokens: dict[tuple[str, int], RecordRef] = {}
    for token in need.tokens:
        type_name = prefixes[token.prefix]
        key = numbers.numbered(stores, type_name, token.number)
        if key is None and wanted:
            highest = numbers.highest(stores, type_name)
            if token.number <= highest:
                # Numbered between the two reads (its record and number are written in one
                # transaction): read it again, or this mail would open a record of its own.
                key = numbers.numbered(stores, type_name, token.number)
            elif token.number <= highest + _in_flight(stores):
                pending.append(f"record {token} (not numbered yet, mail on its way)")
                if may_wait:
                    return Known(), None, tuple(pending)
        if key is not None:
            tokens[(token.prefix, token.number)] = RecordRef(type=type_name, key=key)
            break
    # A token or our signed reference names the record before the thread does (decide's
    # layers a and b): then the thread's mail need not be waited for.
    named = bool(tokens) or bool(_signed_records(message, signing_keys))
    thread: dict[str, RecordRef] = {}
    for mid in need.thread_ids:
        if id_key(mid) == message.key:
            continue  # a mail that names itself waits for no one
        record, on_its_way = message_rows.state(stores, id_key(mid), names)
        if record is not None:
            thread[mid] = record
            break
        if on_its_way and wanted and not named:
            pending.append(f"<{mid}> (ingested, not yet filed)")
            if may_wait:
                return Known(), None, tuple(pending)
    bounce_original = None
    if need.bounce_original:
        bounce_original, on_its_way = message_rows.state(
            stores, id_key(need.bounce_original), names
        )
        attaches = kind == "bounce" and config.classes.bounce == "attach_to_original"
        if on_its_way and bounce_original is None and attaches:
            pending.append(f"bounced <{need.bounce_original}> (ingested, not yet filed)")
            if may_wait:
                return Known(), None, tuple(pending)
    conversation = None
    if need.conversation_id:
        conversation = conversations.record_of(stores, message.mailbox, need.conversation_id)
    infos: dict[RecordRef, RecordInfo] = {}
    route_guard = any(m.route.subject_guard for m in match_routes(config, message))
    candidates = [*tokens.values(), *thread.values(), *([conversation] if conversation else [])]
    for ref in dict.fromkeys(candidates):
        record_type = config.record_type(ref.type)
        # The record's title (subject guard) and status (replies to closed records) matter.
        if route_guard or (
            record_type is not None
            and (record_type.subject_guard or record_type.reply_when_closed != "attach")
        ):
            row = records.get(stores, ref)
            if row is not None:
                infos[ref] = RecordInfo(title=row.get("Title", ""), status=row.get("Status", ""))
                if names is not None and row.get("DisplayId"):
                    names[ref] = str(row["DisplayId"])
                if index_rows is not None and "CreatedAt" in row:
                    index_rows[ref] = index_row(row["CreatedAt"], row.get("Number"), ref.key)
    sender = None
    slots = None
    if need.sender:
        row, slots = _sender(stores, config, need.sender, arrival)
        if slots is not None and slots.contact_by(message.key):
            row = None  # this mail's own claim made it: decided as on its first delivery
        if row is not None:
            sender = Contact(
                address=need.sender,
                kind=row.get("Kind", "guest"),
                allowed=bool(row.get("Allowed", True)),
            )
    on_thread: dict[RecordRef, bool] = {}
    contact = sender is not None and sender.kind == "contact" and sender.allowed
    for ref in dict.fromkeys([*candidates, *_signed_records(message, signing_keys)]):
        record_type = config.record_type(ref.type)
        if record_type is None or not need.sender:
            continue
        # The thread policy asks; so do fields a reply may change, unless a contact's standing
        # answers already.
        changeable = not contact and any(f.on_update for f in record_type.fields)
        if record_type.updates_from == "thread" or changeable:
            on_thread[ref] = timeline.on_thread(stores, ref, need.sender)
    known = Known(
        thread=thread,
        tokens=tokens,
        conversation=conversation,
        records=infos,
        sender=sender,
        bounce_original=bounce_original,
        on_thread=on_thread,
    )
    return known, slots, tuple(pending)


def _filed(stores: Stores, message_key: str) -> FiledMessage | None:
    """Where the message index says the message is filed (one read), or None."""
    return _filed_at(message_rows.filed(stores, message_key))


def _filed_at(own: Entity | None) -> FiledMessage | None:
    """Where the message index row `own` says the message is filed, or None."""
    if own is None:
        return None
    return FiledMessage(
        record=message_rows.record_of(own),
        mailbox=own["Mailbox"],
        source_id=own["SourceId"],
        folder=own.get("Folder"),
    )


def _signed_records(message: MailMessage, keys: Sequence[bytes]) -> list[RecordRef]:
    """The record our signed references name (the decision's layer b), if any."""
    for mid in known_order(message):
        record = verify_message_id(mid, keys)
        if record is not None:
            return [record]
    header = message.header(REF_HEADER)
    record = verify_ref_header(header, keys) if header else None
    return [record] if record is not None else []


def _sender(
    stores: Stores, config: Config, sender: str, arrival: datetime
) -> tuple[dict[str, Any] | None, SenderSlots | None]:
    """The sender's contact row, and its rate-limit slots around the mail's arrival: both live
    in the sender's partition, so this is one request."""
    limit = config.rate_limit
    if limit.allows(sender):
        return contacts.contact(stores, sender), None
    table, partition = stores.table(CONTACTS), contact_partition(sender)
    window = timedelta(minutes=limit.window_minutes)
    contact, rows = sender_rows(table, partition, arrival, window)
    slots = SenderSlots(table, partition, limit.per_sender, window, arrival, rows, contact=contact)
    return contact, slots


def arrival_time(received_at: datetime | None, now: datetime) -> datetime:
    """When the mail arrived, for the rate limit: as its source reports it (IMAP INTERNALDATE,
    Graph receivedDateTime, EWS DateTimeReceived, a file's mtime), never the sender's Date
    header; never later than now (a source's clock ahead of ours counts as now)."""
    if received_at is None:
        return now
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    return min(received_at, now)


def _admitted(plans: Sequence[FilingPlan]) -> bool:
    """Whether the mail is filed as inbound mail: what the rate limit counts (a drop, a rejection
    or our own mail takes no slot)."""
    first = plans[0] if plans else None
    return (
        first is not None
        and first.action in ("create", "attach")
        and first.entry is not None
        and first.entry.direction == "in"
    )


def _new_guest(
    plans: Sequence[FilingPlan], known: Known, partition: str, now: datetime
) -> Entity | None:
    """The guest contact the plan creates for a sender who has none, to be inserted by the
    rate-limit claim's own transaction (same partition): one storage call fewer."""
    if known.sender is not None or not plans:
        return None
    for update in plans[0].contacts:
        if update.kind == "guest" and contact_partition(update.address) == partition:
            return contacts.guest_row(update, now)
    return None


def _without_guest(plans: Sequence[FilingPlan], address: str) -> list[FilingPlan]:
    """The plans without the guest contact already inserted with the sender's slot."""
    return [
        p.model_copy(
            update={
                "contacts": tuple(
                    c for c in p.contacts if not (c.kind == "guest" and c.address == address)
                )
            }
        )
        for p in plans
    ]


def store_attachments(stores: Stores, raw: bytes) -> tuple[AttachmentInfo, ...]:
    """Each attachment in Blob Storage (checked first: size, declared type against content).

    One attachment at a time, read in slices twice (its SHA-256 names the blob, so it is known
    before the upload starts): a big one is never whole in memory."""
    out: list[AttachmentInfo] = []
    for meta, content in itertools.islice(iter_attachments(raw), MAX_ENTRY_ATTACHMENTS):
        digest, size, head = hashlib.sha256(), 0, b""
        for chunk in content():
            digest.update(chunk)
            size += len(chunk)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
        verdict = check(meta.content_type, head, size)
        blob = (
            stores.blobs.put_attachment_stream(
                digest.hexdigest(), content(), size, verdict.content_type, meta.filename
            )
            if verdict.store
            else None
        )
        out.append(
            AttachmentInfo(
                filename=meta.filename,
                content_type=meta.content_type,
                size=meta.size,
                blob=blob,
                note=verdict.note,
            )
        )
    return tuple(out)


# Defects that change what was filed from the mail: said in the plan's reasons, so the
# message index shows them next to the decision.
_SHAPE_DEFECTS = {
    "parser-failed": "the mail's structure could not be read ({}): filed from its headers alone",
    "subject-truncated": "the subject was cut to fit ({})",
    "text-truncated": "the text was read from the start of its part only ({})",
}


def _shape_notes(message: MailMessage) -> tuple[str, ...]:
    notes = [
        _SHAPE_DEFECTS[d.partition(":")[0]].format(d)
        for d in message.defects
        if d.partition(":")[0] in _SHAPE_DEFECTS
    ]
    return tuple(f"{n}; the raw mail is kept whole" for n in dict.fromkeys(notes))


def _waited(waits: int, pending: Sequence[str]) -> str:
    times = "once" if waits == 1 else f"{waits} times"
    if pending:
        return f"waited {times} for {', '.join(pending)}: decided without it"
    return f"waited {times} for the mail it refers to to be filed"


def _fitted(stores: Stores, plan: FilingPlan, text: str) -> FilingPlan:
    """The plan cut to fit its queue message (an 8 MB subject, thousands of recipients); a
    reply text cut short stays whole in Blob Storage. Raises `PlanTooLarge` (poison at once)
    when nothing can make it fit."""
    fitted = fit_plan(plan)
    if fitted is plan:
        return plan
    log.warning(
        "map: mailbox=%s %s plan of %d bytes cut to fit its queue message",
        plan.mailbox,
        log_key(plan.message_key),
        plan_bytes(plan),
    )
    entry = fitted.entry
    cut_text = entry is not None and plan.entry is not None and entry.text != plan.entry.text
    if entry is not None and cut_text and entry.text_blob is None:
        entry = entry.model_copy(update={"text_blob": stores.blobs.put_text(text)})
    note = "the mail's text fields were cut to fit the filing queue; the raw mail has them whole"
    return fitted.model_copy(update={"entry": entry, "reasons": (*fitted.reasons, note)})


def _claimed(
    stores: Stores,
    message: MailMessage,
    plans: list[FilingPlan],
    now: datetime,
    refiled: Callable[[FiledMessage], list[FilingPlan]],
) -> list[FilingPlan]:
    """The plans if this copy of the mail may file it, else a sighting: of the record the
    message index names when the mail is filed already (`refiled` decides it), or of the copy
    that holds the claim.

    One mail reaches several watched mailboxes (To support@, Cc billing@), and their copies
    may be mapped by several workers at once: reading the message index and then filing lets
    both file it. Inserting the claim row is the decision, and only one insert can win. A won
    insert also answers the dedupe question (no claim, so no index row: `message_rows.claim`),
    which saves reading the index for every new mail; a lost one, or a plan that takes no
    claim, reads it as before. The winner's own redelivery (same mailbox and source id) finds
    its claim and files again, idempotently, unless it is filed already; every other copy
    becomes a sighting and opens no record."""
    first = plans[0] if plans else None
    if first is None or first.action not in ("create", "attach") or first.record is None:
        filed = _filed(stores, message.key)
        return plans if filed is None else _other_copy(filed, refiled(filed))
    won, held, own = message_rows.claim(
        stores, message.key, message.mailbox, message.source_id, first.record, now
    )
    if won:
        return [first.model_copy(update={"claimed": True}), *plans[1:]]
    filed = _filed_at(own)  # read with the claim, in the same request
    if filed is not None:
        return _other_copy(filed, refiled(filed))
    if held is None:
        return plans  # ours: our own redelivery, or one withdrawn meanwhile
    why = (
        f"another copy of this Message-ID (mailbox {held['Mailbox']!r}) files it: "
        "recorded as a sighting"
    )
    log.info(
        "map: mailbox=%s %s sighting: the copy in mailbox %s files it",
        message.mailbox,
        log_key(message.key),
        held["Mailbox"],
    )
    sighting = FilingPlan(
        action="sighting",
        message_key=first.message_key,
        mailbox=first.mailbox,
        source_id=first.source_id,
        blob=first.blob,
        folder=first.folder,
        record=message_rows.record_of(held),
        mailbox_actions=first.mailbox_actions,
        kind=first.kind,
        sender=first.sender,
        conversation_id=first.conversation_id,
        reasons=(*first.reasons[:1], why),
        filed_copy=False,  # another copy holds the claim: the index will point at that one
    )
    return [sighting]


def _other_copy(filed: FiledMessage, plans: list[FilingPlan]) -> list[FilingPlan]:
    """The sightings of another copy than the one filed say so (as the file stage would find
    in the index, which keeps pointing at the filed copy), so it records them without reading
    the index; a sighting of the filed copy itself (a redelivery, a move) still reads it, for
    the folder it was last seen in."""
    return [
        p.model_copy(update={"filed_copy": False})
        if p.action == "sighting" and (filed.mailbox, filed.source_id) != (p.mailbox, p.source_id)
        else p
        for p in plans
    ]


def _wait(
    stores: Stores, inbound: InboundMessage, message: MailMessage, wait: OrderWait, why: str
) -> None:
    """Put the mail back on the inbound queue, visible again after the wait's delay."""
    delay = wait.delay(inbound.waits)
    stores.queues.send(
        INBOUND, inbound.model_copy(update={"waits": inbound.waits + 1}), delay_seconds=delay
    )
    log.info(
        "map: mailbox=%s %s waits %ds (%d/%d) for %s",
        message.mailbox,
        log_key(message.key),
        delay,
        inbound.waits + 1,
        wait.max_waits,
        why,
    )


def _filed_now(file: Filer, plan: FilingPlan, now: datetime) -> bool:
    """File `plan` at once, as its `filing` message would be (the same bytes, the same
    handler): this saves the queue's send, receive and delete, 3 of a mail's storage calls.
    On any failure the plan goes to the `filing` queue after all, whose retries and poison
    handling take it from there as before; filing is idempotent, so a plan filed in part is
    finished there, and a crash before either is redelivered with the inbound message."""
    try:
        file(encode(plan), now)
    except Exception as exc:  # any failure: the queue retries it
        log.warning(
            "map: mailbox=%s key=%s filing at once failed, queued for retry: %s",
            plan.mailbox,
            plan.message_key[:40],
            exc,
        )
        return False
    return True


def _map_mail(
    stores: Stores,
    config: Config,
    inbound: InboundMessage,
    *,
    now: datetime,
    signing_keys: Sequence[bytes] = (),
    wait: OrderWait = ORDER_WAIT,
    file: Filer | None = None,
) -> list[FilingPlan]:
    """The mail's filing plans, queued; none when it waits for mail it refers to (then it is
    back on the inbound queue, see `OrderWait`). With `file` (the file stage's handler of a
    `filing` message body), each plan is filed in this invocation instead, and queued only
    where that fails (see `_filed_now`)."""
    message = parse_inbound(stores, inbound)
    classification = classify(message, own_mail(config))
    # Mail of a mailbox the configuration does not know fails as before (and goes to the
    # poison queue with that reason) instead of waiting for mail that cannot file either.
    may_wait = inbound.waits < wait.max_waits and config.mailbox(inbound.mailbox) is not None
    names: dict[RecordRef, str] = {}
    index_rows: dict[RecordRef, str] = {}
    known, slots, pending = gather(
        stores,
        config,
        message,
        classification,
        arrival_time(inbound.received_at, now),
        signing_keys,
        may_wait=may_wait,
        # A won claim answers dedupe once every index row has its claim (store/claims_fill.py).
        dedupe=not claims_complete(stores),
        names=names,
        index_rows=index_rows,
    )
    if pending and may_wait:
        _wait(stores, inbound, message, wait, pending[0])
        return []
    text = reply_text(message.text)

    def decided(known: Known) -> list[FilingPlan]:
        return decide(
            message,
            known,
            config,
            blob=inbound.blob,
            signing_keys=signing_keys,
            classification=classification,
            reply=text,
        )

    plans = decided(known)
    # Mail the limit would hold is admitted only by taking a slot in storage (exact under
    # concurrent workers); without one, the decision with the limit reached stands.
    if slots is not None and _admitted(plans):
        limited = decided(replace(known, sender_recent=config.rate_limit.per_sender))
        if limited[0].action == "hold":
            # A guest contact for a new sender goes in the claim's transaction (a redelivery
            # finds it made by this mail and leaves it out of the plan the same way).
            made = slots.contact_by(message.key)
            guest = _new_guest(plans, known, slots.partition, now)
            slots.new_contact = None if made else guest
            if not slots.claim(message.key):
                log.info(
                    "map: mailbox=%s %s held: %d admitted mails from its sender within a window",
                    message.mailbox,
                    log_key(message.key),
                    slots.in_use(),
                )
                plans = limited
            elif guest is not None and (made or slots.contact_written):
                plans = _without_guest(plans, guest["Address"])
    plans = _claimed(stores, message, plans, now, lambda filed: decided(Known(filed=filed)))
    if known.conversation is not None:
        # The conversation's row names the plan's record already (read above): the file stage
        # links only what the plan still carries, so a Graph or EWS reply writes no link.
        plans = [
            p.model_copy(update={"conversation_id": None})
            if p.record == known.conversation and p.conversation_id
            else p
            for p in plans
        ]
    if any(p.entry and p.entry.attachments for p in plans):
        stored = store_attachments(stores, message.raw)
        plans = [
            p.model_copy(
                update={
                    "entry": p.entry.model_copy(
                        update={"attachments": stored[: len(p.entry.attachments)]}
                    )
                }
            )
            if p.entry is not None and p.entry.attachments
            else p
            for p in plans
        ]
    if len(text) > TEXT_INLINE:
        text_blob = stores.blobs.put_text(text)
        plans = [
            p.model_copy(update={"entry": p.entry.model_copy(update={"text_blob": text_blob})})
            if p.entry is not None
            else p
            for p in plans
        ]
    notes = _shape_notes(message)
    if inbound.waits:
        notes = (*notes, _waited(inbound.waits, pending))
    if notes:
        plans = [p.model_copy(update={"reasons": (*p.reasons, *notes)}) for p in plans]
    # What the map stage read of the record rides in the plan: the file stage reads it no more.
    plans = [
        p.model_copy(
            update={"display_id": names.get(p.record), "index_row": index_rows.get(p.record)}
        )
        if p.record is not None and (p.record in names or p.record in index_rows)
        else p
        for p in plans
    ]
    plans = [_fitted(stores, plan, text) for plan in plans]
    for plan in plans:
        if file is None or not _filed_now(file, plan, now):
            stores.queues.send(FILING, plan)
        # The record is named (CASE-12) by the file stage's line, once it is numbered.
        log.info(
            "map: mailbox=%s %s kind=%s action=%s type=%s",
            message.mailbox,
            log_mail(message.message_id, message.subject),
            plan.kind,
            plan.action,
            plan.record.type if plan.record else "-",
        )
    return plans


def map_queued(
    stores: Stores,
    config: Config,
    body: bytes,
    *,
    now: datetime,
    signing_keys: Sequence[bytes] = (),
    wait: OrderWait = ORDER_WAIT,
    file: Filer | None = None,
) -> list[FilingPlan]:
    """An `inbound` message: one mail (`_map_mail`), or a bundle of them, mapped in order.
    A mail that fails in a bundle goes back to the queue alone, so its retries and its poison
    are its own and the others are not held with it; only when that send fails too does the
    whole bundle fail (and is redelivered: mapping and filing are idempotent)."""
    bundle = bundle_of(body)
    if bundle is None:
        inbound = decode(body, InboundMessage)
        return _map_mail(
            stores, config, inbound, now=now, signing_keys=signing_keys, wait=wait, file=file
        )
    plans: list[FilingPlan] = []
    started = time.monotonic()
    for mail in bundle.mails:
        # Each mail at its own moment, as if it had come alone: its record's activity, its
        # timeline entry and the console's "newest first" order follow the filing order.
        at = now + timedelta(seconds=time.monotonic() - started)
        try:
            plans.extend(
                _map_mail(
                    stores, config, mail, now=at, signing_keys=signing_keys, wait=wait, file=file
                )
            )
        except Exception as exc:  # any failure: the mail's own message retries it
            log.warning(
                "map: mailbox=%s source_id=%s failed in a bundle of %d, queued alone: %s: %s",
                mail.mailbox,
                mail.source_id[:200],
                len(bundle.mails),
                type(exc).__name__,
                exc,
            )
            stores.queues.send(INBOUND, mail)
    return plans


STAGE = "map"  # in logs, metrics and poison messages


def handle(ctx: AppContext, body: bytes, now: datetime) -> object:
    """A message of queue `inbound` (called by its trigger: functions/stage.py)."""
    return map_queued(ctx.stores, ctx.config, body, now=now, signing_keys=ctx.signing_keys)
