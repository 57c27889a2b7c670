"""Graph subscriptions: create what is missing, renew what is near expiry (in `$batch` calls of
20), recreate what vanished, and remove what the configuration no longer wants.

State in `GraphState` (store/subscriptions.py): a row per subscription (subscription id,
resource, nonce, expiry, status, last error), and per nonce the index the webhook checks. The
nonce row is written before the subscription is created: Graph may notify at once, and
notifications of a subscription whose creation is still being answered must count as ours.

Graph's docs disagree on a create for a changeType+resource the app already subscribes: the
current ones give it its own subscription id, an older revision (microsoft-graph-docs-contrib
#8573) answers `409 Conflict`. Both are handled. Without 409 an old subscription keeps delivering
until it is deleted or expires: so a subscription we replace (client state secret rotated, found
failing or expired) is deleted at Graph, and each full pass lists the app's subscriptions
(`GET /subscriptions`) and deletes those pointing at our webhook whose clientState the current
secret does not sign (made with a retired secret) or whose nonce we no longer know (state lost).
With 409 the create lists the app's subscriptions to that resource calling our webhook: one we
can verify (current secret, nonce known for this mailbox and kind: its row was lost, or a
concurrent pass made it) is adopted as the row's subscription (renewed if near expiry); ones
not verifiably ours are deleted and the create is tried once more. Anything else (only another
deployment's URL subscribes it) fails the subscription as any create error does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from ...core.config import Config, GraphMailbox
from ...store import subscriptions as stored
from ...store.keys import subscription_row
from ...store.stores import GRAPH_STATE, Stores
from .auth import GraphAuthError, provider_for
from .client import GraphClient, GraphError
from .clientstate import make, new_nonce, verified_nonce
from .state import secret, secret_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wanted:
    mailbox: GraphMailbox
    kind: str  # mail | folder-<name> | events
    resource: str
    change_type: str


def wanted(config: Config) -> list[Wanted]:
    out: list[Wanted] = []
    for mb in config.mailboxes:
        if not isinstance(mb, GraphMailbox) or not mb.enabled or mb.polling_only:
            continue
        user = f"users/{quote(mb.user, safe='@')}"
        if mb.watch == "mailbox":
            out.append(Wanted(mb, "mail", f"{user}/messages", "created,updated"))
        else:
            for folder in mb.folders:
                change = "created" if folder.lower() == "sentitems" else "created,updated"
                resource = f"{user}/mailFolders('{folder}')/messages"
                out.append(Wanted(mb, f"folder-{folder.lower()}", resource, change))
        if mb.calendar is not None:
            out.append(Wanted(mb, "events", f"{user}/events", "created,updated,deleted"))
    return out


@dataclass
class Summary:
    created: int = 0
    renewed: int = 0
    recreated: int = 0
    adopted: int = 0  # a create answered 409 and the existing subscription was ours
    removed: int = 0
    retired: int = 0  # deleted at Graph: replaced, or made with a retired secret
    batches: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    resync: set[str] = field(default_factory=set)  # mailboxes whose mail must be caught up


def client_for(mailbox: GraphMailbox) -> GraphClient:
    return GraphClient(mailbox.graph_endpoint, provider_for(mailbox))


def maintain(
    config: Config,
    stores: Stores,
    now: datetime,
    *,
    only: str | None = None,
    recreate: Iterable[str] = (),
) -> Summary:
    """One pass over every Graph mailbox's subscriptions (or `only` one mailbox's).
    `recreate`: subscription ids Graph says were removed (lifecycle `subscriptionRemoved`)."""
    summary = Summary()
    key = secret(config)
    table = stores.table(GRAPH_STATE)
    gone = set(recreate)
    wants = [w for w in wanted(config) if only in (None, w.mailbox.name)]
    renewals: dict[int, tuple[GraphClient, list[tuple[Wanted, dict[str, Any]]]]] = {}
    rows = stored.all_rows(table)
    for want in wants:
        row = rows.get(subscription_row(want.mailbox.name, want.kind))
        expires = row.get("Expires") if row else None
        current = (
            row is not None
            and row.get("Status") == "active"
            and row.get("SecretId") == secret_id(key)
            and row.get("SubscriptionId") not in gone
            and isinstance(expires, datetime)
            and expires > now
            and row.get("Resource") == want.resource
        )
        try:
            client = client_for(want.mailbox)
        except Exception as exc:
            summary.failed.append((want.mailbox.name, str(exc)))
            continue
        if not current:
            if key is None:
                summary.failed.append((want.mailbox.name, "client state secret not set"))
                continue
            _create(config, stores, client, want, row, key, now, summary)
            continue
        assert row is not None and isinstance(expires, datetime)
        if expires - now <= timedelta(minutes=config.graph.renew_before_minutes):
            renewals.setdefault(id(client.tokens), (client, []))[1].append((want, row))
    for client, items in renewals.values():
        _renew(config, stores, client, items, key, now, summary)
    if only is None:
        _remove_unwanted(config, stores, wants, rows, summary)
        if key is not None:
            _retire_strays(config, stores, key, rows, summary)
    log.info(
        "graph subscriptions: created=%d renewed=%d recreated=%d adopted=%d removed=%d "
        "retired=%d batches=%d failed=%d",
        summary.created,
        summary.renewed,
        summary.recreated,
        summary.adopted,
        summary.removed,
        summary.retired,
        summary.batches,
        len(summary.failed),
    )
    return summary


def _expiry(config: Config, now: datetime) -> datetime:
    return now + timedelta(minutes=config.graph.subscription_minutes)


def _create(
    config: Config,
    stores: Stores,
    client: GraphClient,
    want: Wanted,
    row: dict[str, Any] | None,
    key: bytes,
    now: datetime,
    summary: Summary,
) -> None:
    table = stores.table(GRAPH_STATE)
    base = (config.graph.notification_url or "").rstrip("/")
    fresh = new_nonce()
    stored.note_nonce(table, fresh, want.mailbox.name, want.kind)
    body = {
        "changeType": want.change_type,
        "notificationUrl": f"{base}/graph/notifications",
        "lifecycleNotificationUrl": f"{base}/graph/lifecycle",
        "resource": want.resource,
        "expirationDateTime": _expiry(config, now).isoformat().replace("+00:00", "Z"),
        "clientState": make(key, fresh),
        "latestSupportedTlsVersion": "v1_2",
    }
    deleted: set[str] = set()  # deleted at Graph while settling a 409
    try:
        try:
            made = client.request("POST", "subscriptions", json=body).json()
            nonce = fresh
        except GraphError as exc:
            if exc.status != 409:
                raise
            made, nonce = _settle_conflict(stores, client, want, body, key, fresh, deleted, exc)
    except (GraphError, GraphAuthError) as exc:
        log.warning("graph: mailbox=%s subscribe %s failed: %s", want.mailbox.name, want.kind, exc)
        summary.failed.append((want.mailbox.name, str(exc)))
        stored.note_failing(table, want.mailbox.name, want.kind, str(exc), now)
        summary.retired += len(deleted)
        return
    summary.retired += len(deleted)
    adopted = nonce != fresh
    if adopted:
        summary.adopted += 1
        _forget_nonce(stores, {"Nonce": fresh})  # written for a create that made nothing
    old_id = str(row.get("SubscriptionId") or "") if row else ""
    if row and old_id:
        summary.recreated += 0 if adopted else 1
        if row.get("Nonce") != nonce:
            _forget_nonce(stores, row)
        # The one it replaces would go on delivering (Graph keeps both): delete it. If this
        # fails, the next full pass finds it among the app's subscriptions.
        if old_id != made.get("id") and old_id not in deleted and _delete(client, old_id):
            summary.retired += 1
    elif not adopted:
        summary.created += 1
    expires = _parse(made.get("expirationDateTime")) or _expiry(config, now)
    if adopted and expires - now <= timedelta(minutes=config.graph.renew_before_minutes):
        renewed = _renew_one(config, client, str(made["id"]), now)
        summary.renewed += renewed is not None
        expires = renewed or expires
    stored.note_nonce(table, nonce, want.mailbox.name, want.kind, made["id"])
    stored.note_active(
        table,
        want.mailbox.name,
        want.kind,
        subscription_id=made["id"],
        resource=want.resource,
        change_type=want.change_type,
        nonce=nonce,
        expires=expires,
        secret_id=secret_id(key),
        now=now,
    )
    # Mail may have arrived while there was no subscription: catch up with delta.
    summary.resync.add(want.mailbox.name)


def _settle_conflict(
    stores: Stores,
    client: GraphClient,
    want: Wanted,
    body: dict[str, Any],
    key: bytes,
    fresh: str,
    deleted: set[str],
    conflict: GraphError,
) -> tuple[dict[str, Any], str]:
    """A create answered 409: Graph keeps one subscription per changeType and resource (some
    tenants and API versions answer so; others create a second one). Find it among the app's
    subscriptions. One calling our webhook, signed with the current secret, whose nonce we
    know for this mailbox and kind is ours (made by a pass whose row was lost, or by a
    concurrent pass): adopt it, returning it and its nonce. One calling our webhook that is
    not verifiably ours (retired secret, forgotten nonce) is deleted and the create is tried
    once more (`fresh`: the nonce of `body`). Anything else (another deployment's URL, not
    listed, not deleted) fails as the 409 did. `deleted`: gets the ids deleted at Graph."""
    table = stores.table(GRAPH_STATE)
    url = str(body["notificationUrl"]).lower()
    change = sorted(want.change_type.split(","))
    same = [
        sub
        for page in client.pages("subscriptions")
        for sub in page.get("value", [])
        if isinstance(sub, dict)
        and sub.get("id")
        and str(sub.get("resource") or "").strip("/").lower() == want.resource.lower()
        and sorted(str(sub.get("changeType") or "").replace(" ", "").split(",")) == change
        and str(sub.get("notificationUrl") or "").rstrip("/").lower() == url
    ]
    stale = []
    for sub in same:
        nonce = verified_nonce(key, sub.get("clientState"))
        known = stored.nonce(table, nonce) if nonce is not None else None
        if nonce is None or known is None:
            stale.append(sub)  # a retired secret made it, or its nonce is forgotten
            continue
        owner = (known.get("Mailbox"), known.get("Kind"), known.get("SubscriptionId") or sub["id"])
        if owner == (want.mailbox.name, want.kind, sub["id"]):
            log.info(
                "graph: mailbox=%s resource=%s: create answered 409, adopting our subscription %s",
                want.mailbox.name,
                want.resource,
                sub["id"],
            )
            return sub, nonce
        # else: ours, but another row's (two mailboxes on one user?): not ours to delete
    if not stale:
        raise GraphError(
            409,
            conflict.code,
            f"{conflict.message} (no subscription of this app to {want.resource} calling {url} "
            "can be adopted or deleted: another deployment's, or another mailbox's?)"[:500],
            "POST /subscriptions",
        ) from conflict
    log.info(
        "graph: mailbox=%s resource=%s: create answered 409, deleting %d subscription(s) not "
        "ours with the current secret, then creating again",
        want.mailbox.name,
        want.resource,
        len(stale),
    )
    for sub in stale:
        if _delete(client, str(sub["id"])):
            deleted.add(str(sub["id"]))
    if len(deleted) < len(stale):
        raise conflict
    made: dict[str, Any] = client.request("POST", "subscriptions", json=body).json()
    return made, fresh


def _renew_one(
    config: Config, client: GraphClient, subscription_id: str, now: datetime
) -> datetime | None:
    """Renew one adopted subscription near its expiry; None if Graph refused (the next pass
    renews it, or recreates it if it vanished)."""
    expiry = _expiry(config, now).isoformat().replace("+00:00", "Z")
    try:
        answer = client.request(
            "PATCH",
            f"subscriptions/{quote(subscription_id, safe='')}",
            json={"expirationDateTime": expiry},
        ).json()
    except (GraphError, GraphAuthError) as exc:
        log.warning("graph: could not renew adopted subscription %s: %s", subscription_id, exc)
        return None
    return _parse(answer.get("expirationDateTime"))


def _delete(client: GraphClient, subscription_id: str) -> bool:
    """Delete one subscription at Graph; True if it is gone (404 counts), False on failure."""
    try:
        client.request("DELETE", f"subscriptions/{quote(subscription_id, safe='')}")
    except GraphError as exc:
        if exc.status == 404:
            return True
        log.warning("graph: could not delete subscription %s: %s", subscription_id, exc)
        return False
    except GraphAuthError as exc:
        log.warning("graph: could not delete subscription %s: %s", subscription_id, exc)
        return False
    return True


def _retire_strays(
    config: Config, stores: Stores, key: bytes, rows: dict[str, dict[str, Any]], summary: Summary
) -> None:
    """Delete the app's subscriptions that call our webhook but are not ours now: their
    clientState is not signed by the current secret (a retired one made them), or it is but
    its nonce is forgotten (its row was lost or replaced). One listing per app and endpoint.
    Subscriptions of the same app calling another URL (another deployment) are left alone.
    `rows`: the subscription rows as the pass began; those it created have their nonce rows."""
    table = stores.table(GRAPH_STATE)
    url = f"{(config.graph.notification_url or '').rstrip('/')}/graph/notifications".lower()
    ours = {str(row.get("SubscriptionId")) for row in rows.values() if row.get("SubscriptionId")}
    apps: dict[tuple[str, str, str, str], GraphMailbox] = {}
    for mb in config.mailboxes:
        if isinstance(mb, GraphMailbox) and mb.enabled:
            ident = (mb.graph_endpoint, mb.tenant_id, str(mb.client_id or ""), mb.auth)
            apps.setdefault(ident, mb)
    for mailbox in apps.values():
        try:
            client = client_for(mailbox)
            listed = [
                sub
                for page in client.pages("subscriptions")
                for sub in page.get("value", [])
                if isinstance(sub, dict)
            ]
        except (GraphError, GraphAuthError) as exc:
            summary.failed.append((mailbox.name, f"list subscriptions: {exc}"[:500]))
            continue
        for sub in listed:
            sub_id = str(sub.get("id") or "")
            if not sub_id or sub_id in ours:
                continue
            if str(sub.get("notificationUrl") or "").rstrip("/").lower() != url:
                continue
            nonce = verified_nonce(key, sub.get("clientState"))
            if nonce is not None and stored.nonce(table, nonce) is not None:
                continue  # being made by a concurrent pass: its row is not written yet
            log.info("graph: deleting subscription %s (not ours with the current secret)", sub_id)
            if _delete(client, sub_id):
                summary.retired += 1


def _renew(
    config: Config,
    stores: Stores,
    client: GraphClient,
    items: list[tuple[Wanted, dict[str, Any]]],
    key: bytes | None,
    now: datetime,
    summary: Summary,
) -> None:
    table = stores.table(GRAPH_STATE)
    expiry = _expiry(config, now).isoformat().replace("+00:00", "Z")
    requests = [
        {
            "method": "PATCH",
            "url": f"/subscriptions/{row['SubscriptionId']}",
            "body": {"expirationDateTime": expiry},
        }
        for _, row in items
    ]
    try:
        answers = client.batch(requests)
    except (GraphError, GraphAuthError) as exc:
        summary.failed.extend((w.mailbox.name, str(exc)) for w, _ in items)
        return
    summary.batches += -(-len(requests) // 20)
    renewed: list[tuple[str, datetime]] = []
    for (want, row), answer in zip(items, answers, strict=True):
        status = int(answer.get("status", 500))
        if status < 300:
            body = answer.get("body") or {}
            expires = _parse(body.get("expirationDateTime")) or _expiry(config, now)
            renewed.append((str(row["RowKey"]), expires))
            summary.renewed += 1
        elif status == 404 and key is not None:
            _create(config, stores, client, want, row, key, now, summary)
        else:
            error = str((answer.get("body") or {}).get("error", {}).get("message", status))
            summary.failed.append((want.mailbox.name, f"renew: {status} {error}"[:500]))
    stored.note_renewed(table, renewed, now)  # one partition: 100 renewals a request


def _remove_unwanted(
    config: Config,
    stores: Stores,
    wants: list[Wanted],
    rows: dict[str, dict[str, Any]],
    summary: Summary,
) -> None:
    """Subscriptions of mailboxes removed from the configuration, or now polling only. Those
    of a mailbox still configured are deleted at Graph; a removed mailbox's credentials are
    gone with it, so its subscriptions lapse at their expiry (their calls are dropped)."""
    table = stores.table(GRAPH_STATE)
    keep = {subscription_row(w.mailbox.name, w.kind) for w in wants}
    for key, row in rows.items():
        if key in keep:
            continue
        mailbox = config.mailbox(str(row.get("Mailbox") or key.partition("~")[0]))
        if isinstance(mailbox, GraphMailbox) and row.get("SubscriptionId"):
            try:
                client_for(mailbox).request("DELETE", f"subscriptions/{row['SubscriptionId']}")
            except GraphError as exc:
                if exc.status != 404:
                    summary.failed.append((mailbox.name, f"unsubscribe: {exc}"))
                    continue
            except GraphAuthError as exc:
                summary.failed.append((mailbox.name, f"unsubscribe: {exc}"))
                continue
        log.info("graph: removing subscription %s (%s)", row.get("SubscriptionId"), key)
        summary.removed += 1
        _forget_nonce(stores, row)
        stored.remove(table, key)


def _forget_nonce(stores: Stores, row: dict[str, Any]) -> None:
    nonce = row.get("Nonce")
    if nonce:
        try:
            stored.forget_nonce(stores.table(GRAPH_STATE), str(nonce))
        except Exception as exc:  # a stale index row only lets a dead subscription's calls in
            log.info("graph: could not forget nonce: %s", exc)


def reauthorize(mailbox: GraphMailbox, subscription_id: str) -> None:
    """Lifecycle `reauthorizationRequired`: reauthorize (Graph: not PATCH as well within 10 min)."""
    client = client_for(mailbox)
    client.request("POST", f"subscriptions/{subscription_id}/reauthorize")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
