"""Filing plans that fit their queue message, whatever the mail held.

A queue message is at most 64 KiB after base64, so a plan's JSON may be 48 KiB. Mail decides
much of a plan (title, names, addresses, reasons quoting them, attachment names), and a
stranger's mail can make any of it huge: an 8 MB subject once made a 10.6 MB plan that failed
five times and ended in the poison queue. Here the text a sender wrote is cut, in steps, until
the plan fits; what identifies the message and its record (keys, ids of the source, the blob of
the raw mail, the record, the mailbox actions) is never touched. The raw mail keeps everything.
"""

from __future__ import annotations

from typing import Any

from .clip import clip
from .contracts import FilingPlan
from .errors import MailfilerError

# 64 KiB of base64 is 48 KiB of JSON; the slack leaves room for a text blob's name added after.
PLAN_JSON_BYTES = 48 * 1024 - 512
# (characters per text, items per list, characters of the reply text), tried in order until the
# plan fits. The reply text is cut last: it is what a reader of the record wants.
_STEPS = (
    (1000, 200, 8000),
    (300, 50, 8000),
    (100, 20, 2000),
    (40, 5, 500),
    (10, 1, 100),
)


class PlanTooLarge(ValueError, MailfilerError):
    """A plan that does not fit even with everything a sender wrote cut short: retrying cannot
    help (the stage sends it to the poison queue at once)."""


def plan_bytes(plan: FilingPlan) -> int:
    """The size of the plan's JSON as the queue carries it (before base64)."""
    return len(plan.model_dump_json(exclude_none=True).encode("utf-8"))


def _texts(values: tuple[str, ...], chars: int, items: int) -> tuple[str, ...]:
    kept = tuple(clip(v, chars) for v in values[:items])
    if len(values) > items:
        kept += (f"... and {len(values) - items} more",)
    return kept


def _entry(entry: Any, chars: int, items: int, text: int) -> Any:
    return entry.model_copy(
        update={
            "subject": clip(entry.subject, chars),
            "from_": clip(entry.from_, chars),
            "to": _texts(entry.to, chars, items),
            "cc": _texts(entry.cc, chars, items),
            "snippet": clip(entry.snippet, chars),
            "text": clip(entry.text, text),
            "message_id": clip(entry.message_id, chars) if entry.message_id else None,
            "attachments": tuple(
                a.model_copy(
                    update={
                        "filename": clip(a.filename, chars) if a.filename else None,
                        "content_type": clip(a.content_type, min(chars, 100)),
                        "note": clip(a.note, chars) if a.note else None,
                    }
                )
                for a in entry.attachments
            ),
        }
    )


def _shrunk(plan: FilingPlan, chars: int, items: int, text: int) -> FilingPlan:
    update: dict[str, Any] = {
        "title": clip(plan.title, chars) if plan.title else plan.title,
        "reasons": _texts(plan.reasons, chars, items),
        "tags": tuple(clip(t, chars) for t in plan.tags[:items]),
        "fields": {k: clip(v, chars) if isinstance(v, str) else v for k, v in plan.fields.items()},
        "notices": tuple(
            n.model_copy(update={"reason": clip(n.reason, chars)}) for n in plan.notices[:items]
        ),
        "contacts": tuple(
            c.model_copy(update={"name": clip(c.name, chars), "detail": clip(c.detail, chars)})
            for c in plan.contacts[:items]
        ),
        "participants": plan.participants[:items],
    }
    if plan.dsn is not None:
        update["dsn"] = plan.dsn.model_copy(
            update={
                name: clip(value, chars)
                for name, value in plan.dsn.model_dump().items()
                if isinstance(value, str)
            }
        )
    if plan.entry is not None:
        update["entry"] = _entry(plan.entry, chars, items, text)
    return plan.model_copy(update=update)


def fit_plan(plan: FilingPlan, limit: int = PLAN_JSON_BYTES) -> FilingPlan:
    """`plan` itself when it fits in `limit` bytes of JSON, else a copy with the sender's text
    cut (each cut ends in an ellipsis); raises `PlanTooLarge` when even the shortest does not
    fit."""
    if plan_bytes(plan) <= limit:
        return plan
    for chars, items, text in _STEPS:
        fitted = _shrunk(plan, chars, items, text)
        if plan_bytes(fitted) <= limit:
            return fitted
    raise PlanTooLarge(
        f"plan for {plan.message_key[:40]} is {plan_bytes(plan)} bytes of JSON even cut short"
    )
