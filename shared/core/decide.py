"""The map stage's decision: from a message and what the stores know to filing plans.

Pure: no I/O and no clock. The map stage first asks `lookups` what to read, reads it into a
`Known`, then calls `decide`. The steps, each leaving a reason in the plan's trail:

1. **Duplicate**: a Message-ID already filed is a sighting (another mailbox or folder, or a
   redelivery), never a second filing.
2. **Classify** (`classify.py`) and apply the configured action of the class: file, file but
   never answer, attach to the original, or drop (recorded, not lost). `attach_to_original`
   never opens a record: a bounce attaches to the record of the mail it bounces (marking the
   recipient undeliverable on 5.x.x), any other class (auto-replies by default) to the record
   step 3 finds by token, signed id, References/In-Reply-To or conversation, without field
   changes, reopening or standing; with no record found it is dropped (recorded, not filed).
3. **Find the record**, in layers; the first layer that finds one wins, and within a layer the
   newest reference does: (a) a record token in the subject (`[CASE-1042]`); (b) our signed
   Message-IDs in In-Reply-To/References or the `X-Mailfiler-Ref` header (forged ones are
   ignored and said so); (c) a filed Message-ID among the last 32 References/In-Reply-To;
   (d) the source's conversation id. With `subject_guard` on the record type or on a route the
   mail matches, layers (c) and (d) count only when the normalised subject matches the record's.
4. **Updates** to an existing record pass its type's `updates_from` policy; `Key: Value` lines
   may change the fields marked `on_update`, and only when the sender has *standing* on the
   record (a known contact, or an address on mail filed on it by someone with standing),
   whatever `updates_from` lets through: a token is easy to guess, so a stranger's reply is
   filed but its field changes are not applied (and said so).
5. **New conversations** go through the routes (`rules.py`), the sender policy of the route
   (known contact, guest, reject, discard, forward), the per-sender rate limit (excess mail is
   held, not lost), and field parsing. Mail we sent that starts no filed conversation opens no
   record.

**Direction** `out` belongs to mail read from a sent folder of its mailbox (`sent_folders`;
mail Mailfiler sends is put on the timeline by the outbound stage itself), never to a From
header: anyone can write our address there. Mail elsewhere From one of our addresses is inbound
and *flagged* (the flag and its reason on the timeline entry), unless the topmost
Authentication-Results of the mailbox's own server (`authserv_id`) passes for the address's
domain (`authres.py`). A flagged sender has no standing and gets no notice.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from . import authres
from .classify import Classification, OwnMail, classify
from .config import Config, Mailbox, RecordType, Route
from .contracts import (
    FLAG_CHARS,
    MAX_PARTICIPANTS,
    SNIPPET_CHARS,
    TEXT_INLINE,
    AttachmentInfo,
    ContactUpdate,
    DsnInfo,
    FilingPlan,
    MailboxAction,
    Notice,
    RecordRef,
    TimelineEntry,
)
from .dsn import Dsn
from .fieldparse import parse_fields
from .identity import own_addresses
from .message import MailMessage, id_key
from .reply_text import reply_text
from .rules import match_routes
from .signing import REF_HEADER, looks_signed, verify_message_id, verify_ref_header
from .subject import normalize_subject
from .tokens import Token, find_tokens

MAX_THREAD_LOOKUPS = 32  # References beyond the last 32 are not looked up


@dataclass(frozen=True)
class FiledMessage:
    """What the message index says about a message already filed."""

    record: RecordRef
    mailbox: str
    source_id: str
    folder: str | None


@dataclass(frozen=True)
class RecordInfo:
    title: str  # as filed; compared normalised for the subject guard
    status: str = "new"


@dataclass(frozen=True)
class Contact:
    address: str
    kind: str  # "contact" or "guest"
    allowed: bool = True


@dataclass(frozen=True)
class Lookups:
    """What the decision needs from storage, computed from the message alone."""

    thread_ids: tuple[str, ...]  # newest first
    tokens: tuple[Token, ...]
    conversation_id: str | None
    sender: str | None
    bounce_original: str | None


@dataclass(frozen=True)
class Known:
    """The facts the map stage gathered from storage before deciding."""

    filed: FiledMessage | None = None
    thread: dict[str, RecordRef] = field(default_factory=dict)  # Message-ID -> its record
    tokens: dict[tuple[str, int], RecordRef] = field(default_factory=dict)  # (prefix, n)
    conversation: RecordRef | None = None
    records: dict[RecordRef, RecordInfo] = field(default_factory=dict)
    sender: Contact | None = None
    sender_recent: int = 0  # mail from this sender filed within the rate-limit window
    # Is the sender on the record's mail (its `~p-` rows)? Looked up for records whose type takes
    # updates only from the thread or has fields a reply may change.
    on_thread: dict[RecordRef, bool] = field(default_factory=dict)
    bounce_original: RecordRef | None = None


_T = TypeVar("_T")


def _per_config(derive: Callable[[Config], _T]) -> Callable[[Config], _T]:
    """`derive` computed once per configuration object: a Config is frozen, so what is derived
    from it cannot change, and a decision asked for it again for every mail (explain and a
    bundle decide many under one). The memo holds the configs it answers for, so an id in it
    is never reused; a few are kept (tests make many)."""
    memo: dict[int, tuple[Config, _T]] = {}

    @functools.wraps(derive)
    def derived(config: Config) -> _T:
        hit = memo.get(id(config))
        if hit is not None and hit[0] is config:
            return hit[1]
        value = derive(config)
        if len(memo) >= 8:
            memo.clear()
        memo[id(config)] = (config, value)
        return value

    return derived


@_per_config
def own_mail(config: Config) -> OwnMail:
    return OwnMail(
        addresses=own_addresses(config),
        message_id_domains=frozenset({config.signing.message_id_domain.lower()}),
    )


@_per_config
def _by_name(config: Config) -> tuple[dict[str, Mailbox], dict[str, RecordType]]:
    """Mailboxes and record types by name, the first of a name as `config.mailbox` and
    `config.record_type` find it (a decision asks up to five times)."""
    mailboxes: dict[str, Mailbox] = {}
    for mailbox in config.mailboxes:
        mailboxes.setdefault(mailbox.name, mailbox)
    types: dict[str, RecordType] = {}
    for record_type in config.record_types:
        types.setdefault(record_type.name, record_type)
    return mailboxes, types


def _mailbox(config: Config, name: str) -> Mailbox | None:
    return _by_name(config)[0].get(name)


def _record_type(config: Config, name: str) -> RecordType | None:
    return _by_name(config)[1].get(name)


@_per_config
def _prefixes(config: Config) -> tuple[str, ...]:
    return tuple(t.prefix for t in config.record_types)


def lookups(message: MailMessage, config: Config, classification: Classification) -> Lookups:
    prefixes = _prefixes(config)
    original = classification.dsn.original_message_id if classification.dsn else None
    return Lookups(
        thread_ids=known_order(message),
        tokens=find_tokens(message.subject, prefixes),
        conversation_id=message.conversation_id,
        sender=message.from_.email.lower() if message.from_ else None,
        bounce_original=original,
    )


def record_key(record_type: str, root_id_key: str) -> str:
    """A record's stable key, derived from its conversation's root.

    Deriving it (instead of allocating one) makes creation idempotent and race-free: a reply
    mapped before its parent is filed still lands on the record the parent creates.
    """
    return hashlib.sha256(f"{record_type}\x00{root_id_key}".encode()).hexdigest()[:32]


def _snippet(text: str) -> str:
    """The text's first SNIPPET_CHARS with runs of whitespace as one space. The head of the
    text is enough when it gives that many (a prefix of the text folds to a prefix of the
    whole's fold), so a long mail is not split whole; a little over SNIPPET_CHARS is tried
    first (splitting is most of the cost: a word a string), then twice that, then all."""
    for size in (SNIPPET_CHARS + SNIPPET_CHARS // 8, SNIPPET_CHARS * 2):
        head = " ".join(text[:size].split())
        if len(head) >= SNIPPET_CHARS or len(text) <= size:
            return head[:SNIPPET_CHARS]
    return " ".join(text.split())[:SNIPPET_CHARS]


def timeline_entry(
    message: MailMessage, text: str, direction: str, kind: str, *, flag: str | None = None
) -> TimelineEntry:
    return TimelineEntry(
        direction="out" if direction == "out" else "in",
        kind=kind,
        flag=flag,
        message_key=message.key,
        message_id=message.message_id,
        subject=message.subject[:1000],
        from_=str(message.from_) if message.from_ else "",
        to=tuple(str(a) for a in message.to[:50]),
        cc=tuple(str(a) for a in message.cc[:50]),
        date=message.date,
        snippet=_snippet(text),
        text=text[:TEXT_INLINE],
        attachments=tuple(
            AttachmentInfo(filename=a.filename, content_type=a.content_type, size=a.size)
            for a in message.attachments[:50]
        ),
    )


def _mailbox_actions(config: Config, mailbox_name: str) -> tuple[MailboxAction, ...]:
    return _after_filing(config).get(mailbox_name, ())


@_per_config
def _after_filing(config: Config) -> dict[str, tuple[MailboxAction, ...]]:
    """Each mailbox's after-filing actions (frozen models: every plan may share them)."""
    by_name: dict[str, tuple[MailboxAction, ...]] = {}
    for mailbox in config.mailboxes:
        after = mailbox.after_filing
        actions: list[MailboxAction] = []
        if after.mark_read:
            actions.append(MailboxAction(action="mark_read"))
        if after.category:
            actions.append(MailboxAction(action="categorize", category=after.category))
        if after.move_to:
            actions.append(MailboxAction(action="move", folder=after.move_to))
        by_name.setdefault(mailbox.name, tuple(actions))  # the first, as config.mailbox finds
    return by_name


@dataclass(frozen=True)
class _Ctx:
    """What every step of one decision shares."""

    message: MailMessage
    known: Known
    config: Config
    plan: Callable[..., FilingPlan]  # with the message's fixed values filled in
    actions: tuple[MailboxAction, ...]
    entry: TimelineEntry
    text: str  # the reply text: new text without quotes and signatures
    kind: str
    class_action: str
    flag: str | None  # why the sender is suspect: no standing, no notice, no guest row
    sender: str | None = None  # the From address, lower case
    direction: Literal["in", "out"] = "in"
    participants: tuple[str, ...] = ()  # who gains standing by this mail (none if flagged)
    dsn: Dsn | None = None
    reasons: list[str] = field(default_factory=list)  # the trail so far, added to by the steps


@dataclass
class _Found:
    record: RecordRef
    why: str


def _find_record(
    message: MailMessage,
    config: Config,
    known: Known,
    keys: Sequence[bytes],
    reasons: list[str],
) -> _Found | None:
    # (a) a token in the subject
    prefixes = {t.prefix: t for t in config.record_types}
    for token in find_tokens(message.subject, prefixes):
        record = known.tokens.get((token.prefix, token.number))
        if record is not None:
            return _Found(record, f"subject token {token} is {record.type} {record.key}")
        reasons.append(f"subject token {token} names no filed record")
    # (b) our signed ids: they cannot be forged, so no subject guard
    for mid in known_order(message):
        record = verify_message_id(mid, keys)
        if record is not None:
            return _Found(record, f"signed reference <{mid}> names {record.type} {record.key}")
        if looks_signed(mid):
            reasons.append(f"reference <{mid}> has our form but a bad signature: ignored")
    ref_header = message.header(REF_HEADER)
    if ref_header:
        record = verify_ref_header(ref_header, keys)
        if record is not None:
            return _Found(record, f"signed {REF_HEADER} names {record.type} {record.key}")
        reasons.append(f"{REF_HEADER} has a bad signature: ignored")
    # (c) filed Message-IDs of the thread, newest first; (d) the conversation id
    candidates: list[tuple[RecordRef, str]] = []
    for mid in known_order(message):
        record = known.thread.get(mid)
        if record is not None:
            header = "In-Reply-To" if mid in message.in_reply_to else "References"
            candidates.append((record, f"{header} <{mid}> is filed on {record.type} {record.key}"))
    if known.conversation is not None:
        record = known.conversation
        candidates.append((record, f"conversation {message.conversation_id} is {record.key}"))
    route_guard: bool | None = None  # matched only when there is a candidate to guard
    for record, why in candidates:
        record_type = _record_type(config, record.type)
        info = known.records.get(record)
        type_guard = record_type is not None and record_type.subject_guard
        if route_guard is None and not type_guard and info is not None:
            route_guard = any(m.route.subject_guard for m in match_routes(config, message))
        guarded = (type_guard or route_guard) and info is not None
        if guarded and info is not None and not _same_subject(info.title, message):
            reasons.append(f"{why}, but the subject differs (subject guard): not used")
            continue
        return _Found(record, why)
    return None


def _same_subject(title: str, message: MailMessage) -> bool:
    return normalize_subject(title).casefold() == message.normalized_subject.casefold()


def known_order(message: MailMessage) -> tuple[str, ...]:
    """Thread Message-IDs newest first, as far as they are looked up."""
    return tuple(reversed(message.thread_ids[-MAX_THREAD_LOOKUPS:]))


def decide(
    message: MailMessage,
    known: Known,
    config: Config,
    *,
    blob: str,
    signing_keys: Sequence[bytes] = (),
    classification: Classification | None = None,
    reply: str | None = None,
) -> list[FilingPlan]:
    """The filing plans for one message: usually one; one per record type when a mail to two
    aliases opens two records. `classification` and `reply` (the reply text) are computed
    here unless the caller has them already. The steps are those of the module's docstring."""
    own = own_mail(config)
    if classification is None:
        classification = classify(message, own)
    sender = message.from_.email.lower() if message.from_ else None
    direction, flag, provenance = _provenance(message, config, own, sender)
    text = reply_text(message.text) if reply is None else reply
    # A suspect sender's mail gives no one standing (its To/Cc could name an accomplice).
    participants = () if flag else _addresses_on(message)
    plan = _planner(message, blob, classification, sender, participants, provenance)

    # 1. dedupe: a Message-ID already filed is a sighting
    if known.filed is not None:
        return [_sighting(config, message, known.filed, plan)]

    kind = classification.kind
    ctx = _Ctx(
        message=message,
        known=known,
        config=config,
        plan=plan,
        actions=_mailbox_actions(config, message.mailbox),
        entry=timeline_entry(message, text, direction, kind, flag=flag),
        text=text,
        kind=kind,
        class_action="file" if kind == "human" else getattr(config.classes, kind),
        flag=flag,
        sender=sender,
        direction=direction,
        participants=participants,
        dsn=classification.dsn,
    )
    # 2. classify: the class's action
    if ctx.class_action == "drop":
        return [_dropped_class(ctx)]
    if kind == "bounce" and ctx.class_action == "attach_to_original":
        return [_bounce(ctx)]
    # 2b. the per-sender rate limit holds excess inbound mail (replies included)
    held = _held(ctx)
    if held is not None:
        return [held]

    # 3. find the record
    found = _find_record(message, config, known, signing_keys, ctx.reasons)
    if found is None and ctx.class_action == "attach_to_original":
        return [_no_original(ctx)]

    # 4. update the record found
    if found is not None:
        return [_update(ctx, found)]

    # 5. open a record for a new conversation
    return _open(ctx)


def _addresses_on(message: MailMessage) -> tuple[str, ...]:
    """The addresses on the mail (From, To, Cc), each once, at most MAX_PARTICIPANTS."""
    on_mail = [*([message.from_] if message.from_ else []), *message.to, *message.cc]
    return tuple(dict.fromkeys(a.email.lower() for a in on_mail))[:MAX_PARTICIPANTS]


def _planner(
    message: MailMessage,
    blob: str,
    classification: Classification,
    sender: str | None,
    participants: tuple[str, ...],
    provenance: tuple[str, ...],
) -> Callable[..., FilingPlan]:
    """A plan maker with the message's fixed values filled in; every plan's reasons start with
    the classification and the provenance."""
    dsn = classification.dsn

    def plan(**decision: Any) -> FilingPlan:
        values: dict[str, Any] = {
            "message_key": message.key,
            "mailbox": message.mailbox,
            "source_id": message.source_id,
            "blob": blob,
            "folder": message.folder,
            "kind": classification.kind,
            "sender": sender,
            "conversation_id": message.conversation_id,
            "participants": participants,
            "dsn": DsnInfo(
                action=dsn.action,
                status=dsn.status,
                final_recipient=dsn.final_recipient,
                original_message_id=dsn.original_message_id,
            )
            if dsn
            else None,
        }
        values.update(decision)
        signs = "; ".join(classification.reasons) or "no machine signs"
        classified = f"classified {classification.kind}: {signs}"
        reasons = (classified, *provenance, *values.pop("reasons", ()))
        return FilingPlan(reasons=reasons, **values)

    return plan


def _sighting(
    config: Config, message: MailMessage, prior: FiledMessage, plan: Callable[..., FilingPlan]
) -> FilingPlan:
    """1. A Message-ID already filed is a sighting of its record, never a second filing.

    After-filing actions run once per mail and mailbox (the file stage's pending-actions row
    keeps them, a crash included): a later sighting in the mailbox that filed it (a
    redelivery, the user moving it back, our own move reported) plans none, so what the user
    did is never undone. Another mailbox gets its own, once (the row decides).
    """
    same_place = (prior.mailbox, prior.source_id) == (message.mailbox, message.source_id)
    actions: tuple[MailboxAction, ...] = ()
    if same_place and prior.folder == message.folder:
        why = "already filed from this mailbox: a redelivery, nothing to change"
    elif same_place:
        why = f"already filed; moved from folder {prior.folder!r} to {message.folder!r}"
    elif prior.mailbox == message.mailbox:
        why = "already filed from this mailbox: another copy, recorded as a sighting"
    else:
        actions = _mailbox_actions(config, message.mailbox)
        why = f"already filed from mailbox {prior.mailbox!r}: recorded as another sighting"
    return plan(action="sighting", record=prior.record, mailbox_actions=actions, reasons=(why,))


def _dropped_class(ctx: _Ctx) -> FilingPlan:
    """2. A class configured `drop` is dropped: recorded, not filed (the raw mail is kept)."""
    kind = ctx.kind
    return ctx.plan(
        action="drop",
        mailbox_actions=ctx.actions,
        reasons=(f"{kind} mail is dropped (classes.{kind}: drop); kept in raw mail",),
    )


def _bounce(ctx: _Ctx) -> FilingPlan:
    """2. A bounce set to `attach_to_original` attaches to the record of the mail it bounces
    (without field changes or standing), else it is dropped; a permanent failure (5.x.x)
    marks the recipient undeliverable either way."""
    dsn, reasons = ctx.dsn, ctx.reasons
    contacts: tuple[ContactUpdate, ...] = ()
    if dsn and dsn.permanent and dsn.final_recipient:
        contacts = (
            ContactUpdate(
                address=dsn.final_recipient,
                kind="undeliverable",
                detail=f"{dsn.status or dsn.action} {dsn.diagnostic or ''}"[:200],
            ),
        )
        reasons.append(
            f"permanent failure {dsn.status or ''} for {dsn.final_recipient}: "
            "contact marked undeliverable"
        )
    if ctx.known.bounce_original is not None:
        record = ctx.known.bounce_original
        reasons.insert(
            0,
            f"bounce of <{dsn.original_message_id if dsn else ''}>, "
            f"filed on {record.type} {record.key}",
        )
        return ctx.plan(
            action="attach",
            record=record,
            entry=ctx.entry,
            mailbox_actions=ctx.actions,
            contacts=contacts,
            participants=(),  # a mail system's report gives no one standing
            reasons=tuple(reasons),
        )
    original = dsn.original_message_id if dsn else None
    why = (
        f"bounce of <{original}>, which is not filed"
        if original
        else "bounce without the original Message-ID"
    )
    return ctx.plan(
        action="drop",
        mailbox_actions=ctx.actions,
        contacts=contacts,
        reasons=(f"{why}: recorded, not filed", *reasons),
    )


def _held(ctx: _Ctx) -> FilingPlan | None:
    """2b. Inbound mail from a sender over the rate limit is held (not lost, no actions)."""
    limited = _rate_limited(ctx.config, ctx.known, ctx.sender) if ctx.direction == "in" else None
    if not limited:
        return None
    return ctx.plan(action="hold", mailbox_actions=(), reasons=(*ctx.reasons, limited))


def _no_original(ctx: _Ctx) -> FilingPlan:
    """3. Machine mail set to `attach_to_original` follows its original or is recorded (dropped),
    never more: it opens no record."""
    kind = ctx.kind
    return ctx.plan(
        action="drop",
        mailbox_actions=ctx.actions,
        reasons=(
            *ctx.reasons,
            f"{kind} to no filed mail: recorded, not filed "
            f"(classes.{kind}: attach_to_original never opens a record)",
        ),
    )


def _update(ctx: _Ctx, found: _Found) -> FilingPlan:
    """4. Mail attaches to the record found, unless its type's `updates_from` refuses the
    sender (rejected); its `Key: Value` lines change fields only with standing; a reply to a
    closed record reopens it, opens a new record or just attaches (`reply_when_closed`)."""
    record_type = _record_type(ctx.config, found.record.type)
    refused = (
        _refuse_update(record_type, ctx.known, found.record, ctx.flag)
        if ctx.direction == "in"
        else None
    )
    if refused and record_type is not None:
        return ctx.plan(
            action="reject",
            record=found.record,
            mailbox_actions=(),
            notices=_notice("reject", None if ctx.flag else ctx.sender, refused, ctx.kind),
            reasons=(found.why, *ctx.reasons, f"{ctx.sender}: {refused}"),
        )
    fields, on_record = _field_changes(ctx, found, record_type)
    info = ctx.known.records.get(found.record)
    status = None
    if (
        record_type is not None
        and info is not None
        and info.status in record_type.closed_statuses
        and ctx.class_action != "attach_to_original"  # a machine neither reopens nor opens
    ):
        policy = record_type.reply_when_closed
        if policy == "new" and ctx.direction == "in":
            return _new_record_for_reply(ctx, found, record_type, info)
        if policy == "reopen" and ctx.direction == "in":
            status = record_type.reopen_status
            ctx.reasons.append(
                f"{found.record.type} {found.record.key} was {info.status}: reopened as {status}"
            )
    return ctx.plan(
        action="attach",
        record=found.record,
        entry=ctx.entry,
        fields=fields,
        status=status,
        mailbox_actions=ctx.actions,
        participants=on_record,
        reasons=(found.why, *ctx.reasons),
    )


def _field_changes(
    ctx: _Ctx, found: _Found, record_type: RecordType | None
) -> tuple[dict[str, str | int], tuple[str, ...]]:
    """4. The fields an inbound reply changes (`on_update` ones) and who gains standing: only
    a sender with standing changes fields or gives standing; machine mail attached to its
    original does neither."""
    fields: dict[str, str | int] = {}
    machine_attach = ctx.class_action == "attach_to_original"
    on_record = () if machine_attach else ctx.participants
    if machine_attach:
        ctx.reasons.append(f"{ctx.kind} attached to its original: no field changes, no standing")
    elif record_type is not None and ctx.direction == "in":
        parsed = parse_fields(ctx.text, record_type, ctx.config.field_block, updating=True)
        lacking = _no_standing(ctx.known, found.record, ctx.flag)
        if lacking is None:
            fields = parsed.values
        else:
            on_record = ()  # writing to a record gives no standing on it
            if parsed.values:
                names = ", ".join(parsed.values)
                ctx.reasons.append(
                    f"field changes ignored ({names}): {ctx.sender or 'the sender'} has no "
                    f"standing on {_display(ctx.known, found.record)} ({lacking})"
                )
        ctx.reasons.extend(parsed.problems)
    return fields, on_record


def _new_record_for_reply(
    ctx: _Ctx, found: _Found, record_type: RecordType, info: RecordInfo
) -> FilingPlan:
    """4. `reply_when_closed: new`: the reply opens a new record (through the sender policy),
    keyed by this mail, not the conversation's root (which is the closed record's)."""
    ctx.reasons.append(
        f"{found.record.type} {found.record.key} is {info.status}: a reply opens a new record"
    )
    fresh = _create(ctx, record_type, {}, (), "reply to a closed record", None, ctx.reasons)
    if fresh.action != "create":
        return fresh  # the sender policy refused, discarded or held it
    new_key = record_key(record_type.name, ctx.message.key)
    new_ref = RecordRef(type=record_type.name, key=new_key)
    return fresh.model_copy(update={"record": new_ref, "root": True})


def _open(ctx: _Ctx) -> list[FilingPlan]:
    """5. A new conversation: mail we sent opens nothing; otherwise the routes it matches (or
    its mailbox's default record type) decide: ignore, discard, or a record per route."""
    message, config, reasons = ctx.message, ctx.config, ctx.reasons
    if ctx.direction == "out":
        return [
            ctx.plan(
                action="drop",
                mailbox_actions=(),
                reasons=(
                    *reasons,
                    "mail we sent that belongs to no filed conversation opens no record",
                ),
            )
        ]
    matches = match_routes(config, message)
    if not matches:
        mailbox = _mailbox(config, message.mailbox)
        if mailbox is None or mailbox.record_type is None:
            raise LookupError(f"mailbox {message.mailbox!r} is not in the configuration")
        default = _record_type(config, mailbox.record_type)
        assert default is not None
        return [
            _create(
                ctx, default, {}, (), f"mailbox {mailbox.name!r} default record type", None, reasons
            )
        ]
    plans: list[FilingPlan] = []
    for match in matches:
        route = match.route
        if route.action == "ignore":
            return [
                ctx.plan(
                    action="drop",
                    mailbox_actions=ctx.actions,
                    reasons=(*reasons, f"{match.why}: ignored"),
                )
            ]
        if route.action == "discard":
            return [
                ctx.plan(
                    action="drop", mailbox_actions=(), reasons=(*reasons, f"{match.why}: discarded")
                )
            ]
        assert route.record_type is not None
        record_type = _record_type(config, route.record_type)
        assert record_type is not None
        plans.append(
            _create(ctx, record_type, dict(route.fields), route.tags, match.why, route, reasons)
        )
    return [p if i == 0 else p.model_copy(update={"primary": False}) for i, p in enumerate(plans)]


def _rate_limited(config: Config, known: Known, sender: str | None) -> str | None:
    """Why this sender's mail is held, if it sent more than the limit in the window."""
    limit = config.rate_limit
    if not sender or limit.allows(sender) or known.sender_recent < limit.per_sender:
        return None
    return (
        f"{sender} sent {known.sender_recent} mails in {limit.window_minutes} minutes "
        f"(limit {limit.per_sender}): held"
    )


def _provenance(
    message: MailMessage, config: Config, own: OwnMail, sender: str | None
) -> tuple[Literal["in", "out"], str | None, tuple[str, ...]]:
    """The mail's direction, why it is flagged (or None), and what the reasons say of it.

    `out` only for mail read from a sent folder: a From header is the sender's to write, so
    our address there is a claim, vouched for only by the mailbox's own server.
    """
    mailbox = _mailbox(config, message.mailbox)
    if mailbox is not None and mailbox.is_sent_folder(message.folder):
        where = f"sent folder {message.folder!r}" if message.folder else "sent mail"
        return "out", None, (f"read from the mailbox's {where}: mail we sent (direction out)",)
    if not sender or sender not in own.addresses:
        return "in", None, ()
    ids = mailbox.authserv_id if mailbox is not None else ()
    domain = sender.rpartition("@")[2]
    found = authres.trusted(message.header_all("Authentication-Results"), ids)
    vouch = authres.vouches(found, domain) if found is not None else None
    if found is not None and vouch is not None:
        return "in", None, (f"From is our address {sender}; {found.authserv_id} vouches: {vouch}",)
    if not ids:
        why = f"mailbox {message.mailbox!r} names no authserv_id to vouch for it"
    elif found is None:
        why = "no Authentication-Results of the mailbox's server"
    else:
        why = f"{found.authserv_id} reports no pass for {domain}"
    flag = f"From claims our address {sender} on mail from outside ({why})"[:FLAG_CHARS]
    return "in", flag, (f"flagged: {flag}; inbound, without standing",)


def _no_standing(known: Known, record: RecordRef, flag: str | None) -> str | None:
    """Why the sender may not change the record's fields by mail (None: it may)."""
    if flag:
        return "it claims our address from outside"
    if known.sender is not None and known.sender.kind == "contact" and known.sender.allowed:
        return None
    if known.on_thread.get(record):
        return None
    return "not on the record's mail, not a known contact"


def _display(known: Known, record: RecordRef) -> str:
    """The record as people name it: its token when the mail named it, else type and key."""
    for (prefix, number), ref in known.tokens.items():
        if ref == record:
            return f"{prefix}-{number}"
    return f"{record.type} {record.key}"


def _refuse_update(
    record_type: RecordType | None, known: Known, record: RecordRef, flag: str | None = None
) -> str | None:
    """Why the sender may not add mail to the record, by its type's `updates_from`."""
    if record_type is None or record_type.updates_from == "anyone":
        return None
    if flag:
        # Our own address is on every record's mail: a claim of it proves no membership.
        return f"claims our address from outside; {record_type.name} takes no such updates"
    if record_type.updates_from == "contacts":
        if known.sender is not None and known.sender.kind == "contact":
            return None
        return f"not a contact; {record_type.name} takes updates from contacts only"
    if known.on_thread.get(record):
        return None
    return f"not on the record's mail; {record_type.name} takes updates from its thread only"


def _notice(
    kind: Literal["acknowledge", "reject"], to: str | None, reason: str, message_kind: str
) -> tuple[Notice, ...]:
    # Never answer machines (RFC 3834): no notice to auto-replies, bounces, lists or no sender.
    if not to or message_kind != "human":
        return ()
    return (Notice(kind=kind, to=to, reason=reason),)


def _create(
    ctx: _Ctx,
    record_type: RecordType,
    fields: dict[str, str | int],
    tags: tuple[str, ...],
    route_why: str,
    route: Route | None,
    reasons: list[str],
) -> FilingPlan:
    message, known, config, plan = ctx.message, ctx.known, ctx.config, ctx.plan
    actions, entry, text = ctx.actions, ctx.entry, ctx.text
    sender = message.from_.email.lower() if message.from_ else None
    trail = list(reasons)
    # Sender policy for creating
    contacts: tuple[ContactUpdate, ...] = ()
    policy = route.senders if route is not None else None
    if known.sender is not None and not ctx.flag:
        trail.append(f"sender {sender} is a known {known.sender.kind}")
    elif sender is not None:
        unknown = policy.unknown if policy else "guest"
        domain = sender.partition("@")[2]
        if (
            unknown == "guest"
            and policy
            and policy.allowed_domains
            and not any(
                domain == d.lower() or domain.endswith("." + d.lower())
                for d in policy.allowed_domains
            )
        ):
            unknown = "reject"
            trail.append(f"sender domain {domain} may not open records")
        if unknown == "guest" and ctx.flag:
            trail.append(f"sender {sender} claims our address: no guest contact, no notice")
        elif unknown == "guest":
            name = message.from_.name if message.from_ else ""
            contacts = (ContactUpdate(address=sender, name=name, kind="guest"),)
            trail.append(f"unknown sender {sender}: created as a guest")
        elif unknown == "reject":
            return plan(
                action="reject",
                mailbox_actions=actions,
                reasons=(*trail, f"unknown sender {sender} may not open records: rejected"),
                notices=_notice("reject", None if ctx.flag else sender, "unknown sender", ctx.kind),
            )
        elif unknown == "discard":
            return plan(
                action="drop",
                mailbox_actions=(),
                reasons=(*trail, f"unknown sender {sender}: discarded"),
            )
        else:
            assert policy is not None and policy.forward_to is not None
            return plan(
                action="drop",
                mailbox_actions=actions,
                reasons=(*trail, f"unknown sender {sender}: forwarded to {policy.forward_to}"),
                notices=(Notice(kind="forward", to=policy.forward_to, reason="unknown sender"),),
            )
    parsed = parse_fields(text, record_type, config.field_block, updating=False)
    trail.extend(parsed.problems)
    values = {**fields, **parsed.values}
    root = message.thread_ids[0] if message.thread_ids else None
    root_key = id_key(root) if root else message.key
    why = (
        f"new conversation ({route_why})"
        if root is None
        else f"no filed message in its thread; conversation root <{root}> ({route_why})"
    )
    notices: tuple[Notice, ...] = ()
    if route is not None and route.acknowledge and ctx.class_action == "file" and not ctx.flag:
        notices = _notice("acknowledge", sender, f"new {record_type.name} record", ctx.kind)
    return plan(
        action="create",
        record=RecordRef(type=record_type.name, key=record_key(record_type.name, root_key)),
        title=message.normalized_subject or message.subject or "(no subject)",
        fields=values,
        tags=tags,
        root=root is None,
        entry=entry,
        mailbox_actions=actions,
        contacts=contacts,
        notices=notices,
        reasons=(why, *trail),
    )
