"""Routes: which record type (if any) a new conversation goes to, by the rules in the config.

Routes are tried in order. A route with `to` applies to the recipients it names: each recipient
alias takes the first route that matches it, so one mail to billing@ and support@ can open a
record of each type. Routes without `to` are the fallback: the first one that matches applies
when no `to` route did. Within a route, every condition given must hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import Config, Route
from .message import MailMessage


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    why: str


def _alias_matches(want: str, address: str) -> bool:
    want_local, _, want_domain = want.partition("@")
    local, _, domain = address.lower().partition("@")
    return domain == want_domain and want_local in (local, local.split("+", 1)[0])


def _domain_matches(want: str, address: str) -> bool:
    domain = address.lower().partition("@")[2]
    return domain == want or domain.endswith("." + want)


def _conditions(route: Route, message: MailMessage, recipients: list[str]) -> list[str] | None:
    """What matched, or None when a condition fails."""
    why: list[str] = []
    sender = message.from_.email.lower() if message.from_ else ""
    if route.to is not None:
        hit = next((r for r in recipients if _alias_matches(route.to, r)), None)
        if hit is None:
            return None
        why.append(f"recipient {hit}")
    if route.sender is not None:
        if sender != route.sender:
            return None
        why.append(f"sender {sender}")
    if route.sender_domain is not None:
        if not _domain_matches(route.sender_domain, sender):
            return None
        why.append(f"sender domain {route.sender_domain}")
    if route.subject is not None:
        if not re.search(route.subject, message.subject, re.IGNORECASE):
            return None
        why.append(f"subject /{route.subject}/")
    if route.body is not None:
        if not re.search(route.body, message.text, re.IGNORECASE | re.MULTILINE):
            return None
        why.append(f"body /{route.body}/")
    for name, pattern in route.headers.items():
        values = message.header_all(name)
        if not any(re.search(pattern, v, re.IGNORECASE) for v in values):
            return None
        why.append(f"header {name} /{pattern}/")
    if route.has_attachments is not None:
        has = any(not a.inline for a in message.attachments)
        if has != route.has_attachments:
            return None
        why.append("attachments" if has else "no attachments")
    return why


def match_routes(config: Config, message: MailMessage) -> list[RouteMatch]:
    """The routes that apply to a new conversation, one per record type, in config order."""
    recipients = [a.email.lower() for a in (*message.to, *message.cc)]
    mine = [r for r in config.routes if r.mailbox in (None, message.mailbox)]
    matched: list[RouteMatch] = []
    claimed: set[str] = set()
    for route in (r for r in mine if r.to is not None):
        assert route.to is not None
        why = _conditions(route, message, recipients)
        if why is None:
            continue
        alias = next(r for r in recipients if _alias_matches(route.to, r))
        if alias in claimed:
            continue
        claimed.add(alias)
        matched.append(RouteMatch(route, f"route {route.name!r}: " + ", ".join(why)))
    if not matched:
        for route in (r for r in mine if r.to is None):
            why = _conditions(route, message, recipients)
            if why is not None:
                detail = ", ".join(why) if why else "matches all mail"
                matched.append(RouteMatch(route, f"route {route.name!r}: {detail}"))
                break
    seen_types: set[str | None] = set()
    unique: list[RouteMatch] = []
    for match in matched:
        key = match.route.record_type if match.route.action == "file" else match.route.action
        if key not in seen_types:
            seen_types.add(key)
            unique.append(match)
    return unique
