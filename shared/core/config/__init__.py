"""The declarative configuration: mailboxes, record types and routes, validated by pydantic.

Pure: text in, a `Config` or a `ConfigError` out. Reading the file and resolving the app settings
that hold secrets happen outside `shared/core`. Secrets are never written here: a mailbox names
the app setting that holds each one (`password_setting: IMAP_SUPPORT_PASSWORD`), which in Azure
is a Key Vault reference.

One module per topic, every name imported from here (`from shared.core.config import X`):
`base` (names, the strict model, ConfigError), `oauth` (credentials), `tasks` (flags, calendar),
`mailboxes` (by kind, SMTP, Graph's shared settings), `records` (types, fields, templates),
`routes` (routes, sender policy, classes, rate limit), `outbound` (notices, signing), `events`
(webhooks), `root` (`Config` and its cross-references), `loading` (`parse_config`).
"""

from __future__ import annotations

from .base import NAME, SECRET_KEYS, SETTING, ConfigError
from .events import Events, EventType, Webhook
from .loading import parse_config
from .mailboxes import (
    AUTHSERV_ID,
    IMAP_SENT_FOLDERS,
    WELL_KNOWN_FOLDERS,
    AfterFiling,
    AppCredentials,
    EwsMailbox,
    GraphMailbox,
    GraphSettings,
    ImapMailbox,
    LocalMailbox,
    Mailbox,
    Smtp,
)
from .oauth import EwsOAuth, GmailOAuth, ImapOAuth
from .outbound import DEFAULT_TEMPLATES, Outbound, OutboundLimits, Signing
from .records import FieldBlock, FieldSpec, RecordType, Template
from .root import Config
from .routes import ClassAction, ClassActions, RateLimit, Route, SenderPolicy
from .tasks import CalendarLinks, FlagTasks

__all__ = [
    "AUTHSERV_ID",
    "DEFAULT_TEMPLATES",
    "IMAP_SENT_FOLDERS",
    "NAME",
    "SECRET_KEYS",
    "SETTING",
    "WELL_KNOWN_FOLDERS",
    "AfterFiling",
    "AppCredentials",
    "CalendarLinks",
    "ClassAction",
    "ClassActions",
    "Config",
    "ConfigError",
    "EventType",
    "Events",
    "EwsMailbox",
    "EwsOAuth",
    "FieldBlock",
    "FieldSpec",
    "FlagTasks",
    "GmailOAuth",
    "GraphMailbox",
    "GraphSettings",
    "ImapMailbox",
    "ImapOAuth",
    "LocalMailbox",
    "Mailbox",
    "Outbound",
    "OutboundLimits",
    "RateLimit",
    "RecordType",
    "Route",
    "SenderPolicy",
    "Signing",
    "Smtp",
    "Template",
    "Webhook",
    "parse_config",
]
