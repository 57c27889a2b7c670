"""`mailfiler explain`: what Mailfiler sees in each message and what it would do, writing nothing.

Nothing is read from or written to storage. The messages of one call are decided in order as
if each were filed: a reply explained after its parent attaches to the parent's record, a token
`[CASE-n]` names a record created earlier in the same call. As the map stage waits for mail it
refers to that is ingested but not yet filed, a message that refers to one later in the call
(its parent, the mail a bounce returns, a token no record has yet while messages remain) is
explained after it, so the order of the files does not change the answer. Senders count as
unknown (guests) and rate limits as not reached; standing on a record (field changes by mail)
comes from the addresses on the mail of this call filed on it.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..core.classify import Classification, classify
from ..core.config import Config
from ..core.contracts import FilingPlan, RecordRef
from ..core.decide import Known, decide, lookups, own_mail
from ..core.message import MailMessage
from ..core.mime import header_message_id, parse_message
from ..core.record_names import name_records
from ..core.reply_text import reply_text
from ..sources.base import SourceMessage
from ..sources.local import LocalSource, LocalSourceError


@dataclass
class Simulation:
    """What filing the earlier messages of this call would have stored."""

    by_message_id: dict[str, RecordRef] = field(default_factory=dict)
    by_token: dict[tuple[str, int], RecordRef] = field(default_factory=dict)
    numbers: dict[RecordRef, str] = field(default_factory=dict)
    by_conversation: dict[tuple[str, str], RecordRef] = field(default_factory=dict)
    participants: dict[RecordRef, set[str]] = field(default_factory=dict)  # the `~p-` rows
    # The last number given per record type: counting `numbers` on each create made explaining
    # n mails quadratic (58% of its CPU at 10,000 mails).
    last_number: dict[str, int] = field(default_factory=dict)
    # How many records each token prefix numbers (`by_token`'s keys per prefix), for `waits_for`.
    last_number_by_prefix: dict[str, int] = field(default_factory=dict)
    # The record types `numbers` holds: a reason names a numbered record only after one of them.
    numbered_types: set[str] = field(default_factory=set)

    def named(self, text: str) -> str:
        """`text` with the records it names as "<type> <key>" shown by their numbers. Only a
        type numbered here can be shown so: text without one is returned as it is, unscanned."""
        if any(f"{record_type} " in text for record_type in self.numbered_types):
            return name_records(text, self.numbers.get)
        return text

    def known(self, message: MailMessage, config: Config, classification: Classification) -> Known:
        need = lookups(message, config, classification)
        thread = {m: self.by_message_id[m] for m in need.thread_ids if m in self.by_message_id}
        tokens = {
            (t.prefix, t.number): self.by_token[(t.prefix, t.number)]
            for t in need.tokens
            if (t.prefix, t.number) in self.by_token
        }
        conversation = (
            self.by_conversation.get((message.mailbox, need.conversation_id))
            if need.conversation_id
            else None
        )
        original = need.bounce_original
        candidates = [*thread.values(), *tokens.values(), *([conversation] if conversation else [])]
        return Known(
            thread=thread,
            tokens=tokens,
            conversation=conversation,
            bounce_original=self.by_message_id.get(original) if original else None,
            on_thread={r: need.sender in self.participants.get(r, set()) for r in candidates},
        )

    def waits_for(
        self,
        message: MailMessage,
        config: Config,
        classification: Classification,
        coming: Counter[str],
        remaining: int,
    ) -> str | None:
        """What the map stage would wait for among the messages of this call not explained
        yet (`coming`: their Message-IDs; `remaining`: how many), as `gather` does: a
        Message-ID, or a token's prefix (`[CASE-n]` before record n exists); None: nothing."""
        kind = classification.kind
        if message.message_id in self.by_message_id:
            return None  # a duplicate: a sighting, whatever comes
        if kind != "human" and getattr(config.classes, kind, "file") == "drop":
            return None
        need = lookups(message, config, classification)
        for token in need.tokens:
            if (token.prefix, token.number) in self.by_token:
                break
            numbered = self.last_number_by_prefix.get(token.prefix, 0)
            if numbered < token.number <= numbered + remaining:
                return f"[{token.prefix}"
        else:
            for mid in need.thread_ids:
                if mid == message.message_id:
                    continue
                if mid in self.by_message_id:
                    break
                if coming[mid]:
                    return mid
        original = need.bounce_original
        attaches = kind == "bounce" and config.classes.bounce == "attach_to_original"
        if attaches and original and original not in self.by_message_id and coming[original]:
            return original
        return None

    def file(self, message: MailMessage, plans: list[FilingPlan], config: Config) -> None:
        for plan in plans:
            if plan.record is None or plan.action not in ("create", "attach"):
                continue
            self.participants.setdefault(plan.record, set()).update(plan.participants)
            if plan.action == "create" and plan.record not in self.numbers:
                record_type = config.record_type(plan.record.type)
                prefix = record_type.prefix if record_type else plan.record.type.upper()
                number = self.last_number.get(plan.record.type, 0) + 1
                self.last_number[plan.record.type] = number
                self.numbers[plan.record] = f"{prefix}-{number}"
                self.numbered_types.add(plan.record.type)
                if (prefix, number) not in self.by_token:
                    self.last_number_by_prefix[prefix] = (
                        self.last_number_by_prefix.get(prefix, 0) + 1
                    )
                self.by_token[(prefix, number)] = plan.record
            if plan.primary and message.message_id:
                self.by_message_id.setdefault(message.message_id, plan.record)
            if plan.primary and message.conversation_id:
                self.by_conversation[(message.mailbox, message.conversation_id)] = plan.record


def iter_messages(paths: list[str]) -> Iterator[tuple[str, SourceMessage]]:
    """(name, message) of every message in files, folders (recursively) and mbox files."""
    for path in paths:
        source = LocalSource(Path(path))
        resolved = f"{Path(path).resolve()}#"
        for ref in source.refs():
            name = ref.replace(resolved, f"{path}#")
            yield name, source.read(ref)


def explain_one(
    name: str,
    raw: bytes,
    mailbox: str,
    config: Config,
    sim: Simulation,
    folder: str | None = None,
    parsed: tuple[MailMessage, Classification] | None = None,
) -> dict[str, Any]:
    """`parsed`: the message and its class when the caller has them (run_explain parses each
    message once to tell whether it waits)."""
    if parsed is None:
        message = parse_message(raw, mailbox=mailbox, source_id=name, folder=folder)
        classification = classify(message, own_mail(config))
    else:
        message, classification = parsed
    new_text = reply_text(message.text)
    duplicate = bool(message.message_id and message.message_id in sim.by_message_id)
    if duplicate:
        plans: list[FilingPlan] = []
    else:
        plans = decide(
            message,
            sim.known(message, config, classification),
            config,
            blob="(not stored)",
            classification=classification,
            reply=new_text,
        )
        sim.file(message, plans, config)
    dsn = classification.dsn
    kind: dict[str, Any] = {"kind": classification.kind, "reasons": list(classification.reasons)}
    if dsn is not None:
        kind["dsn"] = {
            "action": dsn.action,
            "status": dsn.status,
            "final_recipient": dsn.final_recipient,
            "original_message_id": dsn.original_message_id,
            "diagnostic": dsn.diagnostic,
        }
    first = plans[0] if plans else None
    return {
        "file": name,
        "message_id": message.message_id,
        "subject": message.subject,
        "normalized_subject": message.normalized_subject,
        "from": str(message.from_) if message.from_ else None,
        "to": [str(a) for a in message.to],
        "cc": [str(a) for a in message.cc],
        "date": message.date.isoformat() if message.date else None,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size}
            for a in message.attachments
        ],
        "text": message.text,
        "reply_text": new_text,
        "classification": kind,
        "fields": dict(first.fields) if first else {},
        "decision": {
            "action": first.action if first else "sighting",
            "record_type": first.record.type if first and first.record else None,
            "record": sim.numbers.get(first.record) if first and first.record else None,
            "reasons": [sim.named(r) for r in first.reasons]
            if first
            else ["the same Message-ID was explained earlier in this call: a duplicate"],
            "also": [
                {"action": p.action, "record_type": p.record.type if p.record else None}
                for p in plans[1:]
            ],
            "notices": [n.model_dump() for n in first.notices] if first else [],
            "flag": first.entry.flag if first and first.entry else None,
        },
    }


def print_human(result: dict[str, Any], out: TextIO) -> None:
    decision = result["decision"]
    record = decision["record"] or decision["record_type"] or ""
    out.write(f"{result['file']}\n")
    out.write(f"  {result['subject']!r} from {result['from']}\n")
    out.write(f"  {result['classification']['kind']}: {decision['action']} {record}\n")
    if decision["flag"]:
        out.write(f"    FLAGGED: {decision['flag']}\n")
    for reason in decision["reasons"]:
        out.write(f"    - {reason}\n")
    if result["fields"]:
        out.write(f"    fields: {result['fields']}\n")


@dataclass
class _Waiting:
    name: str
    got: SourceMessage
    message: MailMessage
    classification: Classification
    on: str  # what it waits for: a Message-ID, or `[PREFIX` (a record number)


def run_explain(
    paths: list[str], mailbox: str, config: Config, as_json: bool, out: TextIO = sys.stdout
) -> int:
    sim = Simulation()
    failures = 0
    try:
        # First the Message-IDs of the call (headers only), so a message can wait for a later one.
        coming: Counter[str] = Counter()
        mids: dict[str, str | None] = {}  # by name, read once (its headers parsed)
        remaining = 0
        for name, got in iter_messages(paths):
            remaining += 1
            mid = mids[name] = header_message_id(got.raw)
            if mid:
                coming[mid] += 1
        waiting: list[_Waiting] = []

        def emit(
            name: str, got: SourceMessage, parsed: tuple[MailMessage, Classification]
        ) -> dict[str, Any]:
            nonlocal remaining
            result = explain_one(
                name, got.raw, mailbox, config, sim, folder=got.folder, parsed=parsed
            )
            if as_json:
                out.write(json.dumps(result, ensure_ascii=False) + "\n")
            else:
                print_human(result, out)
            remaining -= 1
            mid = mids[name] if name in mids else header_message_id(got.raw)
            if mid:
                coming[mid] -= 1
            return result

        def release(result: dict[str, Any]) -> None:
            """Explain what waited for the message just explained (or for a record number,
            when one was created), in the order it came; each may release more."""
            done = [result]
            while done:
                last = done.pop()
                created = last["decision"]["action"] == "create"
                for item in list(waiting):
                    if item.on != last["message_id"] and not (created and item.on[0] == "["):
                        continue
                    on = sim.waits_for(item.message, config, item.classification, coming, remaining)
                    if on is None:
                        waiting.remove(item)
                        done.append(emit(item.name, item.got, (item.message, item.classification)))
                    else:
                        item.on = on

        for name, got in iter_messages(paths):
            message = parse_message(got.raw, mailbox=mailbox, source_id=name, folder=got.folder)
            classification = classify(message, own_mail(config))
            on = sim.waits_for(message, config, classification, coming, remaining)
            if on is not None:
                waiting.append(_Waiting(name, got, message, classification, on))
                continue
            release(emit(name, got, (message, classification)))
        for item in waiting:  # what waits for mail that never comes: decided without it
            emit(item.name, item.got, (item.message, item.classification))
    except LocalSourceError as exc:
        print(f"mailfiler explain: {exc}", file=sys.stderr)
        failures += 1
    return 1 if failures else 0
