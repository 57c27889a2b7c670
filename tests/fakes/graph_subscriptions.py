"""Subscriptions and change notifications of the fake Graph.

Shapes follow:
- subscription resource type (api-reference/v1.0/resources/subscription.md) and "Create
  subscription" (api-reference/v1.0/api/subscription-post-subscriptions.md): 201 with id,
  resource, applicationId, changeType, clientState, notificationUrl, lifecycleNotificationUrl,
  expirationDateTime (7 fraction digits), creatorId, includeResourceData, latestSupportedTlsVersion,
  encryptionCertificate(Id), notificationQueryOptions, notificationUrlAppId. Creating the same
  changeType+resource again gives another subscription with its own id, as the current docs
  describe; both deliver. With ``conflict_on_duplicate`` it answers 409 instead, as
  microsoft-graph-docs-contrib#8573 documented ("Duplicate subscriptions are not allowed") and
  msgraph-sdk-go#596 shows on the wire: {"error": {"code": "ExtensionError", "message":
  "Operation: Create; Exception: [Status Code: Conflict; Reason: A subscripton already exists.
  ..."}} (Graph's spelling). Taken per app: an app lists and deletes only its own.
- One change to a message raises several `updated` notifications with the same version
  (`echoes`, default 2), as Outlook does for one user action or one PATCH/move.
- changeNotification / changeNotificationCollection and resourceData
  (concepts/change-notifications-delivery-webhooks.md): {"value": [{subscriptionId,
  subscriptionExpirationDateTime, changeType, resource, resourceData {"@odata.type",
  "@odata.id", "@odata.etag", id}, clientState, tenantId}]}; Outlook writes resource as
  "Users/{user-guid}/Messages/{id}".
- lifecycle notifications (concepts/change-notifications-lifecycle-events.md): {"value":
  [{subscriptionId, subscriptionExpirationDateTime, tenantId, clientState, lifecycleEvent}]}.
- Subscription lifetime for Outlook messages/events: at most 10,080 minutes; shorter than 45
  minutes is raised to 45 (includes/change-notifications-subscription-lifetime.md).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.graph_model import JSON, GraphError, iso7, new_guid, parse_datetime
from tests.fakes.graph_store import Change, Clock, MailStore

MAX_MINUTES = 10_080
MIN_MINUTES = 45
CHANGE_TYPES = ("created", "updated", "deleted")


@dataclass
class Subscription:
    id: str
    resource: str
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: dt.datetime
    application_id: str
    creator_id: str
    tenant_id: str
    user_id: str
    kind: str  # "messages" or "events"
    folder_id: str | None
    latest_tls: str = "v1_2"
    immutable_ids: bool = False
    reauthorization_required: bool = False
    reauthorized: int = 0
    renewed: int = 0

    def to_json(self, context: str | None = None) -> JSON:
        out: JSON = {"@odata.context": context} if context else {}
        out |= {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": iso7(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": self.latest_tls,
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }
        return out


@dataclass
class Pending:
    """A change notification waiting in the outbox for ``fake.deliver()``."""

    url: str
    subscription_id: str
    notification: JSON


def clamp_expiry(requested: dt.datetime, now: dt.datetime) -> dt.datetime:
    if requested <= now:
        raise GraphError(
            400, "InvalidRequest", "Subscription expiration date time must be in the future."
        )
    upper = now + dt.timedelta(minutes=MAX_MINUTES)
    lower = now + dt.timedelta(minutes=MIN_MINUTES)
    return max(min(requested, upper), lower)


def _url(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise GraphError(400, "InvalidRequest", f"'{name}' is required.")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise GraphError(400, "InvalidRequest", f"Invalid '{name}': '{value}'.")
    return value


@dataclass
class SubscriptionRegistry:
    lock: threading.RLock
    clock: Clock
    store: MailStore
    require_https: bool = False
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    outbox: list[Pending] = field(default_factory=list)
    per_mailbox_limit: int = 1000
    echoes: int = 2  # `updated` notifications per change of a message
    conflict_on_duplicate: bool = False  # 409 to a create for a changeType+resource held

    # --- creation ---------------------------------------------------------------------------------

    def parse_resource(self, resource: str) -> tuple[str, str, str | None]:
        """users/{id}/messages, users/{id}/mailFolders('{f}')/messages, users/{id}/events."""
        path = resource.strip().split("?", 1)[0].strip("/")
        path = re.sub(r"(\w+)\('([^']*)'\)", r"\1/\2", path)
        segments = [urllib.parse.unquote(s) for s in path.split("/")]
        lowered = [s.lower() for s in segments]
        if lowered and lowered[0] == "me":
            raise GraphError(
                400,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: BadRequest; Reason: /me request is "
                "only valid with delegated authentication flow.]",
            )
        if len(segments) < 3 or lowered[0] != "users":
            raise GraphError(400, "InvalidRequest", f"Resource '{resource}' is not supported.")
        box = self.store.mailbox(segments[1])
        rest = lowered[2:]
        if rest == ["messages"]:
            return box.id, "messages", None
        if rest == ["events"]:
            return box.id, "events", None
        if len(rest) == 3 and rest[0] == "mailfolders" and rest[2] == "messages":
            return box.id, "messages", self.store.folder(box, segments[3]).id
        raise GraphError(400, "InvalidRequest", f"Resource '{resource}' is not supported.")

    def check_body(self, body: Any) -> dict[str, Any]:
        """Validate a POST /subscriptions body; returns the normalized fields."""
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        raw_types = body.get("changeType")
        if not isinstance(raw_types, str) or not raw_types.strip():
            raise GraphError(400, "InvalidRequest", "'changeType' is required.")
        types = tuple(t.strip() for t in raw_types.split(",") if t.strip())
        bad = [t for t in types if t not in CHANGE_TYPES]
        if bad or len(set(types)) != len(types):
            raise GraphError(400, "InvalidRequest", f"Invalid changeType '{raw_types}'.")
        url = _url(body.get("notificationUrl"), "notificationUrl")
        lifecycle = body.get("lifecycleNotificationUrl")
        if lifecycle is not None:
            lifecycle = _url(lifecycle, "lifecycleNotificationUrl")
        if self.require_https:
            for u in (url, lifecycle):
                if u and not u.startswith("https://"):
                    raise GraphError(
                        400, "InvalidRequest", "The Notification Url must be an HTTPS URL."
                    )
        resource = body.get("resource")
        if not isinstance(resource, str) or not resource.strip():
            raise GraphError(400, "InvalidRequest", "'resource' is required.")
        raw_expiry = body.get("expirationDateTime")
        if not isinstance(raw_expiry, str):
            raise GraphError(400, "InvalidRequest", "'expirationDateTime' is required.")
        try:
            requested = parse_datetime(raw_expiry)
        except ValueError as exc:
            raise GraphError(
                400, "InvalidRequest", f"Invalid expirationDateTime '{raw_expiry}'."
            ) from exc
        client_state = body.get("clientState")
        if client_state is not None and (
            not isinstance(client_state, str) or len(client_state) > 128
        ):
            raise GraphError(
                400, "InvalidRequest", "clientState must be a string of at most 128 characters."
            )
        if body.get("includeResourceData"):
            raise GraphError(
                400,
                "InvalidRequest",
                "includeResourceData requires encryptionCertificate and encryptionCertificateId.",
            )
        tls = body.get("latestSupportedTlsVersion") or "v1_2"
        if tls not in {"v1_0", "v1_1", "v1_2", "v1_3"}:
            raise GraphError(400, "InvalidRequest", f"Invalid latestSupportedTlsVersion '{tls}'.")
        user_id, kind, folder = self.parse_resource(resource)
        return {
            "change_types": types,
            "notification_url": url,
            "lifecycle_url": lifecycle,
            "resource": resource,
            "requested": requested,
            "client_state": client_state,
            "latest_tls": tls,
            "user_id": user_id,
            "kind": kind,
            "folder_id": folder,
        }

    def _live(self) -> list[Subscription]:
        now = self.clock.now()
        for sub in [s for s in self.subscriptions.values() if s.expiration <= now]:
            del self.subscriptions[sub.id]
        return list(self.subscriptions.values())

    def create(
        self,
        fields: dict[str, Any],
        *,
        application_id: str,
        creator_id: str,
        tenant_id: str,
        immutable_ids: bool,
    ) -> Subscription:
        with self.lock:
            # By default a second subscription to the same resource and URL is created like the
            # first, with its own id (no 409): both deliver until deleted or expired.
            live = self._live()
            if self.conflict_on_duplicate and any(
                s.application_id == application_id
                and _same_resource(s.resource, fields["resource"])
                and set(s.change_types) == set(fields["change_types"])
                for s in live
            ):
                raise GraphError(
                    409,
                    "ExtensionError",
                    "Operation: Create; Exception: [Status Code: Conflict; Reason: A subscripton "
                    "already exists. It must be deleted before a another can be made.]",
                )
            if sum(1 for s in live if s.user_id == fields["user_id"]) >= self.per_mailbox_limit:
                raise GraphError(
                    403,
                    "ExtensionError",
                    "Operation: Create; Exception: [Status Code: Forbidden; Reason: The maximum "
                    "number of subscriptions for this mailbox has been reached.]",
                )
            sub = Subscription(
                id=new_guid(),
                resource=fields["resource"],
                change_types=fields["change_types"],
                notification_url=fields["notification_url"],
                lifecycle_url=fields["lifecycle_url"],
                client_state=fields["client_state"],
                expiration=clamp_expiry(fields["requested"], self.clock.now()),
                application_id=application_id,
                creator_id=creator_id,
                tenant_id=tenant_id,
                user_id=fields["user_id"],
                kind=fields["kind"],
                folder_id=fields["folder_id"],
                latest_tls=fields["latest_tls"],
                immutable_ids=immutable_ids,
            )
            self.subscriptions[sub.id] = sub
            return sub

    # --- management -------------------------------------------------------------------------------

    def get(self, sub_id: str, application_id: str | None = None) -> Subscription:
        with self.lock:
            self._live()
            sub = self.subscriptions.get(sub_id)
        if sub is None or (application_id is not None and sub.application_id != application_id):
            raise GraphError(404, "ResourceNotFound", f"The object '{sub_id}' was not found.")
        return sub

    def listing(self, application_id: str) -> list[Subscription]:
        with self.lock:
            return [s for s in self._live() if s.application_id == application_id]

    def renew(self, sub_id: str, application_id: str, expiration: str) -> Subscription:
        with self.lock:
            sub = self.get(sub_id, application_id)
            try:
                requested = parse_datetime(expiration)
            except ValueError as exc:
                raise GraphError(
                    400, "InvalidRequest", f"Invalid expirationDateTime '{expiration}'."
                ) from exc
            sub.expiration = clamp_expiry(requested, self.clock.now())
            sub.reauthorization_required = False
            sub.renewed += 1
            return sub

    def reauthorize(self, sub_id: str, application_id: str) -> None:
        with self.lock:
            sub = self.get(sub_id, application_id)
            sub.reauthorization_required = False
            sub.reauthorized += 1

    def delete(self, sub_id: str, application_id: str | None = None) -> Subscription:
        with self.lock:
            sub = self.get(sub_id, application_id)
            del self.subscriptions[sub.id]
            self.outbox = [p for p in self.outbox if p.subscription_id != sub.id]
            return sub

    # --- notifications ----------------------------------------------------------------------------

    def on_change(self, changes: list[Change]) -> None:
        """Queue change notifications per matching live subscription and change: `echoes` of
        each `updated` of a message (one per other change)."""
        with self.lock:
            live = self._live()
            for change in changes:
                copies = self.echoes if change.change_type == "updated" else 1
                copies = copies if change.kind == "message" else 1
                for sub in live:
                    if not self._matches(sub, change):
                        continue
                    for _ in range(max(1, copies)):
                        self.outbox.append(
                            Pending(sub.notification_url, sub.id, self.notification(sub, change))
                        )

    @staticmethod
    def _matches(sub: Subscription, change: Change) -> bool:
        if sub.user_id != change.user_id or change.change_type not in sub.change_types:
            return False
        if change.kind == "event":
            return sub.kind == "events"
        if sub.kind != "messages":
            return False
        if sub.folder_id is None:
            return change.mailbox
        return change.folder_id == sub.folder_id

    @staticmethod
    def notification(sub: Subscription, change: Change) -> JSON:
        collection, odata_type = (
            ("Messages", "#Microsoft.Graph.Message")
            if change.kind == "message"
            else ("Events", "#Microsoft.Graph.Event")
        )
        resource = f"Users/{change.user_id}/{collection}/{change.item_id}"
        return {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _offset_iso(sub.expiration),
            "changeType": change.change_type,
            "resource": resource,
            "resourceData": {
                "@odata.type": odata_type,
                "@odata.id": resource,
                "@odata.etag": change.etag,
                "id": change.item_id,
            },
            "clientState": sub.client_state,
            "tenantId": sub.tenant_id,
        }

    @staticmethod
    def lifecycle(sub: Subscription, event: str) -> JSON:
        return {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _offset_iso(sub.expiration),
            "tenantId": sub.tenant_id,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }

    def take_outbox(self) -> list[Pending]:
        with self.lock:
            live = {s.id for s in self._live()}
            taken = [p for p in self.outbox if p.subscription_id in live]
            self.outbox = []
            return taken

    def requeue(self, items: list[Pending]) -> None:
        with self.lock:
            self.outbox[:0] = items


def _same_resource(a: str, b: str) -> bool:
    return a.strip().strip("/").lower() == b.strip().strip("/").lower()


def _offset_iso(value: dt.datetime) -> str:
    """Notifications write the expiry with milliseconds, e.g. 2016-03-19T22:11:09.952Z."""
    text = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[:-3] + "Z"
