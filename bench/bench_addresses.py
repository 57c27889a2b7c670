"""Address-parse agreement: the addresses `parse_message` reads against the expectations in
``tests/data/addresses/cases.json`` (RFC 5322 Appendix A, RFC 6532 addresses, deceptive
display names, repeated headers), side by side with the stdlib's `getaddresses` alone on the
same header values (the first address for From and Sender, entries without '@' left out).

Run with ``python -m bench.bench_addresses``. A case agrees when every field it names does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from shared.core.message import Address, MailMessage
from shared.core.mime import addresses_of, parse_message

CASES = Path(__file__).resolve().parents[1] / "tests" / "data" / "addresses" / "cases.json"
SINGLE = ("from", "sender")

Pairs = list[list[str]]


def ours(msg: MailMessage, name: str) -> Pairs:
    fields: dict[str, tuple[Address | None, ...]] = {
        "from": (msg.from_,),
        "sender": (msg.sender,),
        "to": msg.to,
        "cc": msg.cc,
        "reply-to": msg.reply_to,
    }
    found = fields[name] if name in fields else addresses_of(msg.header_all(name))
    return [[a.name, a.email] for a in found if a is not None]


def stdlib(msg: MailMessage, name: str) -> Pairs:
    try:
        pairs = getaddresses(list(msg.header_all(name)))
    except Exception:  # counted as a miss
        return [["error", ""]]
    out = []
    for display, email in pairs:
        if "@" in email:
            local, _, domain = email.rpartition("@")
            out.append([display, f"{local}@{domain.lower()}"])
    return out[:1] if name in SINGLE else out


def agree(case: dict[str, Any], read: Callable[[MailMessage, str], Pairs]) -> bool:
    msg = parse_message(case["raw"].encode("utf-8"), mailbox="bench", source_id=case["id"])
    return all(read(msg, name) == want for name, want in case["expect"].items())


def main() -> None:
    if not CASES.exists():
        print(f"address parse: {CASES} missing")
        return
    cases: list[dict[str, Any]] = json.loads(CASES.read_text(encoding="utf-8"))
    rfc = [c for c in cases if c["source"].startswith("RFC 5322")]
    n = len(cases)
    print(f"address parse: {n} cases ({len(rfc)} from RFC 5322 Appendix A, {n - len(rfc)} more)")
    print(f"{'':34}{'agree':>10}{'Appendix A':>12}")
    for label, read in (("ours (parse_message)", ours), ("stdlib getaddresses alone", stdlib)):
        total = sum(agree(c, read) for c in cases)
        appendix = sum(agree(c, read) for c in rfc)
        print(f"{label:34}{f'{total}/{n}':>10}{f'{appendix}/{len(rfc)}':>12}")
    misses = [c["id"] for c in cases if not agree(c, ours)]
    if misses:
        print(f"ours disagrees on: {', '.join(misses)}")


if __name__ == "__main__":
    main()
