"""The declarative configuration: mailboxes, record types and routes, validated by pydantic.

Pure: text in, a `Config` or a `ConfigError` out. Reading the file and resolving the app settings
that hold secrets happen outside `shared/core`. Secrets are never written here: a mailbox names
the app setting that holds each one (`password_setting: IMAP_SUPPORT_PASSWORD`), which in Azure
is a Key Vault reference.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import MailfilerError

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SETTING = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Keys that would put a secret in the file; each has a `<key>_setting` twin naming an app setting.
SECRET_KEYS = ("password", "client_secret", "secret", "token", "refresh_token", "api_key", "key")


class ConfigError(MailfilerError, ValueError):
    """A configuration that cannot be used, with every problem located in the file."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"{source}: {path}: {problem}" if path else f"{source}: {problem}"
            for path, problem in problems
        ]
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key).lower() in SECRET_KEYS:
                    raise ValueError(
                        f"'{key}' would put a secret in the file; write '{key}_setting: NAME' "
                        "and keep the value in that app setting (a Key Vault reference in Azure)"
                    )
        return data


class AfterFiling(_Strict):
    """What to do to the mail in its mailbox once it is safely filed."""

    mark_read: bool = False
    move_to: str | None = None
    category: str | None = None
    delete_after_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="delete the mail from the mailbox this many days after it was handled "
        "(filed, dropped or rejected; never held mail); the raw mail stays in Blob Storage",
    )


AUTHSERV_ID = r"^[A-Za-z0-9][A-Za-z0-9.\-_:]{0,252}$"  # a host name, as servers write it


class _MailboxBase(_Strict):
    name: Annotated[str, Field(pattern=NAME)]
    # The mailbox's own addresses and aliases. A From header naming one proves nothing (anyone
    # can write it): only mail read from a sent folder is ours (see `sent_folders`).
    addresses: tuple[str, ...] = ()
    sent_folders: tuple[str, ...] | None = Field(
        default=None,
        description="folders whose mail we sent (filed as direction out); unset: the kind's "
        "default (Graph sentitems; EWS sentitems; IMAP the smtp.sent_folder and the usual "
        "names of a Sent folder; local none)",
    )
    authserv_id: tuple[Annotated[str, Field(pattern=AUTHSERV_ID)], ...] = Field(
        default=(),
        description="the authserv-id(s) the mailbox's own server writes in "
        "Authentication-Results; only such a header can vouch for mail From our addresses",
    )
    record_type: str | None = Field(
        default=None, description="record type for new conversations when no route matches"
    )
    enabled: bool = True
    after_filing: AfterFiling = AfterFiling()
    failure_folder: str | None = Field(
        default=None,
        description="move mail that could not be filed (it reached the poison queue) here",
    )

    @field_validator("authserv_id", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    def default_sent_folders(self) -> tuple[str, ...]:
        return ()

    def is_sent_folder(self, folder: str | None) -> bool:
        """Whether mail read from `folder` is mail this mailbox sent (case-insensitive)."""
        if folder is None:
            return False
        folders = self.default_sent_folders() if self.sent_folders is None else self.sent_folders
        return folder.casefold() in {f.casefold() for f in folders}


class LocalMailbox(_MailboxBase):
    """A folder of .eml files, a Maildir, or an mbox file (relative to the config file)."""

    kind: Literal["local"]
    path: str
    smtp: Smtp | None = Field(default=None, description="how mail from this mailbox is sent")
    sent: bool = Field(
        default=False, description="the path holds mail this mailbox sent (a Sent folder export)"
    )

    def is_sent_folder(self, folder: str | None) -> bool:
        # Local files carry no folder: the whole path is sent mail, or none of it is.
        return self.sent or super().is_sent_folder(folder)


def _check_app_credentials(auth: str, client_id: str | None, where: Any) -> None:
    """An Entra app's credential is named the way its `auth` needs (Graph, IMAP XOAUTH2)."""
    if auth == "client_secret" and not (client_id and where.client_secret_setting):
        raise ValueError("auth 'client_secret' needs client_id and client_secret_setting")
    if auth == "certificate" and not (client_id and where.certificate_setting):
        raise ValueError("auth 'certificate' needs client_id and certificate_setting")
    if auth == "workload_identity" and not client_id:
        raise ValueError("auth 'workload_identity' needs client_id")


class FlagTasks(_Strict):
    """A flagged mail becomes a task record linked to the mail's record (Graph and IMAP
    mailboxes; IMAP flags carry no dates)."""

    record_type: str
    completed_status: str = Field(
        default="closed", description="the task's status when the flag is completed"
    )
    # What unflagging (flag cleared, not completed) does to the task.
    on_unflag: Literal["keep", "close", "cancel"] = "close"
    cancelled_status: str = "cancelled"


class ImapOAuth(_Strict):
    """XOAUTH2 for IMAP through Microsoft Entra ID: app-only (the app is registered as an
    Exchange service principal with permission on the mailbox), or delegated (`device_code`:
    a person signs in once with `mailfiler auth imap --mailbox NAME`; the token cache is kept
    encrypted in Table Storage)."""

    provider: Literal["microsoft"] = "microsoft"
    tenant_id: str
    auth: Literal[
        "client_secret", "certificate", "managed_identity", "workload_identity", "device_code"
    ] = "client_secret"
    client_id: str | None = None
    client_secret_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    certificate_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    login_endpoint: str = "https://login.microsoftonline.com"
    scope: str | None = Field(
        default=None,
        description="app-only: https://outlook.office365.com/.default; delegated: "
        "https://outlook.office.com/IMAP.AccessAsUser.All",
    )

    @property
    def token_scope(self) -> str:
        if self.scope:
            return self.scope
        if self.auth == "device_code":
            return "https://outlook.office.com/IMAP.AccessAsUser.All"
        return "https://outlook.office365.com/.default"

    @property
    def graph_endpoint(self) -> str:
        return self.token_scope.removesuffix("/.default")

    @model_validator(mode="after")
    def _credential_named(self) -> ImapOAuth:
        if self.auth == "device_code":
            if not self.client_id:
                raise ValueError("auth 'device_code' needs client_id (a public client app)")
        else:
            _check_app_credentials(self.auth, self.client_id, self)
        return self


def _oauth_provider(value: Any) -> str:
    """IMAP's oauth block: Microsoft unless it says `provider: google`."""
    if isinstance(value, dict):
        return str(value.get("provider", "microsoft"))
    return str(getattr(value, "provider", "microsoft"))


class GmailOAuth(_Strict):
    """XOAUTH2 for Gmail (and Google Workspace): a refresh token of an OAuth client with the
    https://mail.google.com/ scope, redeemed for an access token when one is needed."""

    provider: Literal["google"]
    client_id: str
    client_secret_setting: Annotated[str, Field(pattern=SETTING)]
    refresh_token_setting: Annotated[str, Field(pattern=SETTING)]
    token_endpoint: str = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)

    @model_validator(mode="after")
    def _https(self) -> GmailOAuth:
        url = self.token_endpoint
        if not url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("token_endpoint must be https://")
        return self


class Smtp(_Strict):
    """How an IMAP (or local) mailbox sends: SMTP submission, then a copy appended to the
    mailbox's Sent folder over IMAP (IMAP mailboxes)."""

    host: str
    port: int | None = Field(default=None, ge=1, le=65535, description="587, or 465 with implicit")
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    ca_bundle: str | None = None
    auth: Literal["password", "xoauth2", "none"] = "password"
    username: str | None = None
    password_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    sent_folder: str | None = Field(
        default="Sent", description="IMAP folder a copy is appended to; null: none"
    )

    @property
    def server_port(self) -> int:
        return self.port or (465 if self.tls == "implicit" else 587)

    @model_validator(mode="after")
    def _sane(self) -> Smtp:
        if self.auth == "password" and not (self.username and self.password_setting):
            raise ValueError("smtp auth 'password' needs username and password_setting")
        if self.tls == "none" and self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("smtp tls: none would send credentials in clear; use starttls")
        return self


# The names IMAP servers give the Sent folder (Dovecot, Exchange, Apple, Gmail, Courier/cPanel).
IMAP_SENT_FOLDERS = ("Sent", "Sent Items", "Sent Messages", "[Gmail]/Sent Mail", "INBOX/Sent")


class ImapMailbox(_MailboxBase):
    """Any IMAP server, polled: new mail by UID since the last poll, per folder."""

    kind: Literal["imap"]
    host: str
    port: int | None = Field(default=None, ge=1, le=65535, description="993, or 143 without TLS")
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    ca_bundle: str | None = Field(
        default=None, description="a PEM file of CAs to trust instead of the system's"
    )
    username: str
    auth: Literal["password", "xoauth2"] = "password"
    password_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    shared_mailbox: str | None = Field(
        default=None,
        description="open this mailbox with the credentials of `username` (a delegate): SASL "
        "PLAIN's authorization identity, or the XOAUTH2 user with the delegate's token",
    )
    oauth: (
        Annotated[
            Annotated[ImapOAuth, Tag("microsoft")] | Annotated[GmailOAuth, Tag("google")],
            Discriminator(_oauth_provider),
        ]
        | None
    ) = None
    folders: tuple[str, ...] = ("INBOX",)
    since: date | None = Field(
        default=None, description="the first sync reads mail received since; unset: everything"
    )
    max_per_poll: int = Field(default=500, ge=1, le=10_000, description="back-pressure")
    poll_minutes: int = Field(default=1, ge=1, le=1440)
    disable_after_failures: int = Field(
        default=20, ge=1, description="consecutive failed polls before the mailbox is disabled"
    )
    smtp: Smtp | None = Field(default=None, description="how mail from this mailbox is sent")
    tasks: FlagTasks | None = None
    flag_rescan: int = Field(
        default=200,
        ge=0,
        le=5000,
        description="servers without CONDSTORE: the newest N messages whose \\Flagged is "
        "re-read each poll (with CONDSTORE, every flag change is seen)",
    )

    @model_validator(mode="after")
    def _credential_named(self) -> ImapMailbox:
        if self.auth == "password" and not self.password_setting:
            raise ValueError("auth 'password' needs password_setting (the app setting's name)")
        if self.auth == "xoauth2" and self.oauth is None:
            raise ValueError("auth 'xoauth2' needs oauth (tenant_id, client_id, ...)")
        if self.tls == "none" and self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("tls: none would send the password in clear; use implicit or starttls")
        return self

    @property
    def server_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)

    def default_sent_folders(self) -> tuple[str, ...]:
        named = (self.smtp.sent_folder,) if self.smtp and self.smtp.sent_folder else ()
        return (*named, *IMAP_SENT_FOLDERS)


WELL_KNOWN_FOLDERS = frozenset(
    {"inbox", "sentitems", "archive", "deleteditems", "junkemail", "drafts", "outbox"}
)


class CalendarLinks(_Strict):
    """Tasks follow the dates of an Outlook event linked to them (Graph mailboxes)."""

    create_events: bool = Field(
        default=False, description="create an event for each new task (marked as Mailfiler's)"
    )
    # What deleting the linked event does to the task: unlink only, or also close it.
    on_event_deleted: Literal["unlink", "close"] = "unlink"


class GraphMailbox(_MailboxBase):
    """A Microsoft 365 mailbox read through Microsoft Graph (app-only permissions)."""

    kind: Literal["graph"]
    user: str = Field(description="the mailbox's UPN or object id")
    tenant_id: str
    auth: Literal["client_secret", "certificate", "managed_identity", "workload_identity"] = (
        "client_secret"
    )
    client_id: str | None = Field(
        default=None,
        description="the Entra app's client id; for managed identity, a user-assigned one's",
    )
    client_secret_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    certificate_setting: Annotated[str | None, Field(pattern=SETTING)] = Field(
        default=None, description="app setting holding the PEM private key and certificate"
    )
    # No public endpoint: delta queries on the timer instead of change notifications.
    polling_only: bool = False
    # mailbox: one subscription to every message of the mailbox, filtered by `folders` here;
    # folders: one subscription per folder (more subscriptions to renew, less noise).
    watch: Literal["mailbox", "folders"] = "mailbox"
    folders: tuple[str, ...] = Field(
        default=("inbox", "sentitems"),
        description="well-known folder names (inbox, sentitems, archive, ...) or display names",
    )
    first_sync_from: date | None = Field(
        default=None, description="the first sync reads mail received since; unset: everything"
    )
    tasks: FlagTasks | None = None
    calendar: CalendarLinks | None = None
    graph_endpoint: str = "https://graph.microsoft.com"
    login_endpoint: str = "https://login.microsoftonline.com"

    def default_sent_folders(self) -> tuple[str, ...]:
        return ("sentitems",)

    @model_validator(mode="after")
    def _credential_named(self) -> GraphMailbox:
        _check_app_credentials(self.auth, self.client_id, self)
        if self.watch == "folders":
            named = [f for f in self.folders if f.lower() not in WELL_KNOWN_FOLDERS]
            if named:
                raise ValueError(
                    f"watch: folders subscribes to well-known folders only ({', '.join(named)} "
                    "is not one); use watch: mailbox to file from folders by name"
                )
        if self.calendar is not None and self.tasks is None:
            raise ValueError("calendar links dates of tasks: it needs 'tasks'")
        for name in ("graph_endpoint", "login_endpoint"):
            url = getattr(self, name)
            local = url.startswith(("http://127.0.0.1", "http://localhost"))
            if not (url.startswith("https://") or local):
                raise ValueError(f"{name} must be https://")
        return self


class GraphSettings(_Strict):
    """What every Graph mailbox with change notifications shares."""

    # The app's public base URL; Graph calls `<url>/graph/notifications` and `/graph/lifecycle`.
    notification_url: str | None = None
    client_state_secret_setting: Annotated[str, Field(pattern=SETTING)] = (
        "GRAPH_CLIENT_STATE_SECRET"  # noqa: S105 (the name of the setting, not a secret)
    )
    # Graph's ceiling for mail and events is 10,080 minutes; asking a little less leaves room
    # for a clock that runs ahead.
    subscription_minutes: int = Field(default=10_000, ge=45, le=10_080)
    renew_before_minutes: int = Field(
        default=2_880, ge=30, description="renew a subscription this long before it expires"
    )
    # Delta catch-up for mailboxes with change notifications, in case Graph dropped some
    # without a `missed` event; polling-only mailboxes run delta on every poll.
    safety_sync_minutes: int = Field(default=360, ge=5)

    @model_validator(mode="after")
    def _sane(self) -> GraphSettings:
        url = self.notification_url
        local = ("http://127.0.0.1", "http://localhost")
        if url is not None and not (url.startswith("https://") or url.startswith(local)):
            raise ValueError("notification_url must be https:// (Graph calls only HTTPS)")
        if self.renew_before_minutes >= self.subscription_minutes:
            raise ValueError("renew_before_minutes must be less than subscription_minutes")
        return self


class EwsOAuth(_Strict):
    """App-only OAuth for EWS through Microsoft Entra ID (Exchange Online tenants that still
    allow EWS): the app's `full_access_as_app` permission, used with impersonation."""

    tenant_id: str
    auth: Literal["client_secret", "certificate", "managed_identity", "workload_identity"] = (
        "client_secret"
    )
    client_id: str | None = None
    client_secret_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    certificate_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    login_endpoint: str = "https://login.microsoftonline.com"
    scope: str = "https://outlook.office365.com/.default"

    @property
    def graph_endpoint(self) -> str:
        return self.scope.removesuffix("/.default")

    @model_validator(mode="after")
    def _credential_named(self) -> EwsOAuth:
        _check_app_credentials(self.auth, self.client_id, self)
        return self


class EwsMailbox(_MailboxBase):
    """On-premises Exchange (2013-2019), or Exchange Online where EWS is still allowed, polled
    through EWS with exchangelib: SyncFolderItems per folder, MIME by GetItem."""

    kind: Literal["ews"]
    endpoint: str = Field(
        description="the EWS URL, e.g. https://mail.example.com/EWS/Exchange.asmx "
        "(autodiscover is used only when `autodiscover: true`)"
    )
    autodiscover: bool = False
    email: str = Field(description="the mailbox's primary SMTP address")
    auth: Literal["ntlm", "basic", "oauth"] = "ntlm"
    username: str | None = Field(
        default=None, description="NTLM: DOMAIN\\user or user@domain; basic: the login"
    )
    password_setting: Annotated[str | None, Field(pattern=SETTING)] = None
    oauth: EwsOAuth | None = None
    # Always stated: with impersonation the service account acts as the mailbox's owner
    # (ApplicationImpersonation role); with delegate it opens the mailbox by its permissions.
    access_type: Literal["delegate", "impersonation"]
    ca_bundle: str | None = Field(
        default=None, description="a PEM file of CAs to trust (internal certificates)"
    )
    version: str | None = Field(
        default="15.1",
        pattern=r"^\d+\.\d+$",
        description="the server's Exchange build (15.0: 2013, 15.1: 2016, 15.2: 2019); "
        "unset: asked from the server",
    )
    folders: tuple[str, ...] = Field(
        default=("inbox",),
        description="distinguished folder names (inbox, sentitems, ...) or paths below the "
        'top of the mailbox ("Inbox/Cases")',
    )
    since: date | None = Field(
        default=None, description="the first sync files mail received since; unset: everything"
    )
    max_per_poll: int = Field(default=500, ge=1, le=10_000, description="back-pressure")
    page_size: int = Field(default=100, ge=1, le=512, description="changes per SyncFolderItems")
    poll_minutes: int = Field(default=1, ge=1, le=1440)
    disable_after_failures: int = Field(
        default=20, ge=1, description="consecutive failed polls before the mailbox is disabled"
    )
    tasks: FlagTasks | None = None
    calendar: CalendarLinks | None = Field(
        default=None,
        description="tasks follow the dates of calendar items linked to them (needs tasks)",
    )

    def default_sent_folders(self) -> tuple[str, ...]:
        return ("sentitems", "sent")

    @model_validator(mode="after")
    def _credential_named(self) -> EwsMailbox:
        if self.auth in ("ntlm", "basic") and not (self.username and self.password_setting):
            raise ValueError(f"auth '{self.auth}' needs username and password_setting")
        if self.auth == "oauth":
            if self.oauth is None:
                raise ValueError("auth 'oauth' needs oauth (tenant_id, client_id, ...)")
            if self.access_type != "impersonation":
                raise ValueError("app-only OAuth opens mailboxes by impersonation only")
        local = self.endpoint.startswith(("http://127.0.0.1", "http://localhost"))
        if not (self.endpoint.startswith("https://") or local):
            raise ValueError("endpoint must be https:// (credentials would travel in clear)")
        if self.calendar is not None:
            if self.tasks is None:
                raise ValueError("calendar links dates of tasks: it needs 'tasks'")
            if self.calendar.create_events:
                raise ValueError("calendar.create_events is for Graph mailboxes only")
        return self


# What a token provider needs from a mailbox (Graph) or an IMAP mailbox's oauth block.
AppCredentials = GraphMailbox | ImapOAuth | EwsOAuth


Mailbox = Annotated[
    LocalMailbox | ImapMailbox | GraphMailbox | EwsMailbox, Field(discriminator="kind")
]


class FieldSpec(_Strict):
    """A record field that `Key: Value` lines in a mail body may set."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,60}$")]
    type: Literal["text", "int", "date", "choice"] = "text"
    choices: tuple[str, ...] = ()
    on_update: bool = Field(default=False, description="a reply may change it")

    @model_validator(mode="after")
    def _choices_for_choice(self) -> FieldSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError("type 'choice' needs choices")
        return self


class Template(_Strict):
    """`$token`, `$subject`, `$reason`, `$sender`, `$mailbox`, `$record_type` are filled in."""

    subject: str
    body: str


class RecordType(_Strict):
    name: Annotated[str, Field(pattern=NAME)]
    prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{0,9}$")]
    title: str | None = None
    fields: tuple[FieldSpec, ...] = ()
    # Who may add mail to an existing record: anyone, only addresses already on the record's
    # mail (From, To, Cc), or only known contacts.
    updates_from: Literal["anyone", "thread", "contacts"] = "anyone"
    # A match by header (References, conversation) counts only if the subject matches too.
    subject_guard: bool = False
    statuses: tuple[str, ...] = ("new", "open", "pending", "closed")
    closed_statuses: tuple[str, ...] = ("closed",)
    # What a reply to a closed record does: reopen it (to `reopen_status`), open a new record
    # for the reply's conversation, or just attach.
    reply_when_closed: Literal["reopen", "new", "attach"] = "reopen"
    reopen_status: str = "open"
    templates: dict[Literal["acknowledge", "reject", "forward"], Template] = {}

    @model_validator(mode="after")
    def _closed_are_statuses(self) -> RecordType:
        unknown = [s for s in self.closed_statuses if s not in self.statuses]
        if unknown:
            raise ValueError(f"closed_statuses {unknown} are not among statuses")
        if "new" not in self.statuses:
            raise ValueError("statuses must include 'new', the status of a new record")
        if self.reopen_status not in self.statuses:
            raise ValueError(f"reopen_status {self.reopen_status!r} is not among statuses")
        return self

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name.lower() == name.lower()), None)


class SenderPolicy(_Strict):
    """What to do with mail that would create a record, by who sent it."""

    unknown: Literal["guest", "reject", "discard", "forward"] = "guest"
    allowed_domains: tuple[str, ...] = ()  # empty: every domain may create guests
    forward_to: str | None = None

    @model_validator(mode="after")
    def _forward_has_target(self) -> SenderPolicy:
        if self.unknown == "forward" and not self.forward_to:
            raise ValueError("unknown: forward needs forward_to")
        return self


class Route(_Strict):
    """Mail matching every condition given here goes to `record_type` (or is ignored/discarded).

    `to` matches a recipient address or alias, plus-addressing included (`billing+x@`);
    `sender` an address, `sender_domain` a domain (and its subdomains); `subject` and `body`
    are regular expressions (case-insensitive); `headers` maps a header to a regular
    expression its value must match; `has_attachments` asks for (or against) attachments.
    """

    name: Annotated[str, Field(pattern=NAME)]
    mailbox: str | None = None
    to: str | None = None
    sender: str | None = None
    sender_domain: str | None = None
    subject: str | None = None
    body: str | None = None
    headers: dict[str, str] = {}
    has_attachments: bool | None = None
    action: Literal["file", "ignore", "discard"] = "file"
    record_type: str | None = None
    fields: dict[str, str | int] = {}
    tags: tuple[str, ...] = ()
    senders: SenderPolicy = SenderPolicy()
    acknowledge: bool = False  # send the sender a notice with the new record's token
    # Mail this route matches finds its record by References or conversation id only when the
    # normalised subject matches the record's too (also settable per record type).
    subject_guard: bool = False

    @field_validator("to", "sender", "sender_domain")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @field_validator("subject", "body")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("headers")
    @classmethod
    def _header_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"header {name}: not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _type_when_filing(self) -> Route:
        if self.action == "file" and not self.record_type:
            raise ValueError("a route that files needs record_type")
        return self


ClassAction = Literal["file", "file_no_answer", "attach_to_original", "drop"]


class ClassActions(_Strict):
    """What happens to each class of mail (`human` always files).

    `attach_to_original` never opens a record: the mail joins the record of the mail it
    answers or bounces, else it is recorded, not filed. Auto-replies default to it, so an
    out-of-office to unknown or unfiled mail opens nothing.
    """

    auto_reply: ClassAction = "attach_to_original"
    bounce: ClassAction = "attach_to_original"
    feedback: ClassAction = "drop"
    bulk: ClassAction = "drop"
    own_loop: ClassAction = "drop"


class RateLimit(_Strict):
    per_sender: int = Field(default=20, ge=1)
    window_minutes: int = Field(default=120, ge=1)
    allow: tuple[str, ...] = ()  # addresses or @domains never limited

    def allows(self, address: str) -> bool:
        address = address.lower()
        return any(a.lower() in (address, "@" + address.partition("@")[2]) for a in self.allow)


class Signing(_Strict):
    """Keys for our signed Message-IDs: the app settings that hold them, newest first."""

    key_settings: tuple[Annotated[str, Field(pattern=SETTING)], ...] = ()
    message_id_domain: str = "mailfiler.invalid"


class FieldBlock(_Strict):
    """Where `Key: Value` lines are read: between these marker lines, or (without markers) at
    the very top of the new text."""

    start: str | None = None
    end: str | None = None


EventType = Literal[
    "record.created",
    "record.updated",
    "message.filed",
    "task.created",
    "task.updated",
    "task.completed",
]


class Webhook(_Strict):
    """A downstream HTTPS endpoint that receives events, signed with HMAC-SHA256."""

    name: Annotated[str, Field(pattern=NAME)]
    url: str
    secret_setting: Annotated[str, Field(pattern=SETTING)]
    events: tuple[EventType, ...] = ()  # empty: every event
    record_types: tuple[str, ...] = ()  # empty: every record type

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        # Plain HTTP only to this machine (local development and tests).
        local = ("http://127.0.0.1", "http://localhost", "http://[::1]")
        if not (value.startswith("https://") or value.startswith(local)):
            raise ValueError("webhook url must be https:// (http:// only for localhost)")
        return value


class Events(_Strict):
    webhooks: tuple[Webhook, ...] = ()
    # Also put every event on this Storage queue, for consumers inside Azure.
    queue: Annotated[str | None, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")] = None
    max_attempts: int = Field(default=8, ge=1, le=50)


DEFAULT_TEMPLATES: dict[str, Template] = {
    "acknowledge": Template(
        subject="[$token] $subject",
        body="Hello,\n\nthank you for your message. We have filed it as $token; please keep "
        "[$token] in the subject when you write about it.\n\nThis is an automatic reply.\n",
    ),
    "reject": Template(
        subject="Re: $subject",
        body="Hello,\n\nyour message could not be accepted: $reason.\n\nThis is an automatic "
        "reply.\n",
    ),
    "forward": Template(
        subject="[discarded] $subject",
        body="A message from $sender to $mailbox was discarded ($reason). It is attached.\n",
    ),
}


class OutboundLimits(_Strict):
    """Automatic mail to one recipient (RFC 3834 loop protection)."""

    window_minutes: int = Field(default=180, ge=1)
    # At most 1,000: a recipient's slots are one table row (64 KiB per property).
    per_window: int = Field(default=10, ge=1, le=1000)
    per_day: int = Field(default=40, ge=1, le=1000)


class Outbound(_Strict):
    limits: OutboundLimits = OutboundLimits()
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=10_000, le=35 * 1024 * 1024)
    templates: dict[Literal["acknowledge", "reject", "forward"], Template] = {}

    def template(self, kind: str, record_type: RecordType | None = None) -> Template:
        if record_type is not None and kind in record_type.templates:
            return record_type.templates[kind]
        return self.templates.get(kind) or DEFAULT_TEMPLATES[kind]  # type: ignore[call-overload]


class Config(_Strict):
    version: Literal[1] = 1
    record_types: tuple[RecordType, ...]
    mailboxes: tuple[Mailbox, ...]
    routes: tuple[Route, ...] = ()
    classes: ClassActions = ClassActions()
    rate_limit: RateLimit = RateLimit()
    signing: Signing = Signing()
    outbound: Outbound = Outbound()
    field_block: FieldBlock = FieldBlock()
    events: Events = Events()
    graph: GraphSettings = GraphSettings()

    @model_validator(mode="after")
    def _references_resolve(self) -> Config:
        problems: list[tuple[str, str]] = []
        if not self.record_types:
            problems.append(("record_types", "declare at least one record type"))
        if not self.mailboxes:
            problems.append(("mailboxes", "declare at least one mailbox"))
        types = {t.name for t in self.record_types}
        _unique(problems, "record_types", [t.name for t in self.record_types])
        _unique(problems, "mailboxes", [m.name for m in self.mailboxes])
        _unique(problems, "routes", [r.name for r in self.routes])
        mailboxes = {m.name for m in self.mailboxes}
        for i, mb in enumerate(self.mailboxes):
            if mb.record_type and mb.record_type not in types:
                problems.append(
                    (f"mailboxes[{i}].record_type", _unknown("record type", mb.record_type, types))
                )
            if mb.record_type is None and not any(
                r.mailbox in (None, mb.name) and r.to is None and r.action == "file"
                for r in self.routes
            ):
                problems.append(
                    (f"mailboxes[{i}]", "needs record_type, or a route without 'to' for it")
                )
        for i, mb in enumerate(self.mailboxes):
            if (
                isinstance(mb, ImapMailbox | EwsMailbox)
                and mb.tasks
                and mb.tasks.record_type not in types
            ):
                problems.append(
                    (
                        f"mailboxes[{i}].tasks.record_type",
                        _unknown("record type", mb.tasks.record_type, types),
                    )
                )
            if isinstance(mb, GraphMailbox):
                if mb.tasks and mb.tasks.record_type not in types:
                    problems.append(
                        (
                            f"mailboxes[{i}].tasks.record_type",
                            _unknown("record type", mb.tasks.record_type, types),
                        )
                    )
                if not mb.polling_only and not self.graph.notification_url:
                    problems.append(
                        (
                            f"mailboxes[{i}]",
                            "change notifications need graph.notification_url (the app's public "
                            "https URL), or set polling_only: true",
                        )
                    )
        for i, route in enumerate(self.routes):
            if route.record_type and route.record_type not in types:
                problems.append(
                    (f"routes[{i}].record_type", _unknown("record type", route.record_type, types))
                )
            if route.mailbox and route.mailbox not in mailboxes:
                problems.append(
                    (f"routes[{i}].mailbox", _unknown("mailbox", route.mailbox, mailboxes))
                )
        if problems:
            raise ValueError("; ".join(f"{p}: {m}" for p, m in problems))
        return self

    def mailbox(self, name: str) -> LocalMailbox | ImapMailbox | GraphMailbox | EwsMailbox | None:
        return next((m for m in self.mailboxes if m.name == name), None)

    def record_type(self, name: str) -> RecordType | None:
        return next((t for t in self.record_types if t.name == name), None)

    def secret_settings(self) -> dict[str, str]:
        """Every app setting the file names for a secret -> where it is named."""
        out: dict[str, str] = {}
        for i, mb in enumerate(self.mailboxes):
            for key, value in mb.model_dump().items():
                if key.endswith("_setting") and value:
                    out[value] = f"mailboxes[{i}].{key}"
                if isinstance(value, dict):  # a nested block: IMAP's oauth
                    for inner, setting in value.items():
                        if inner.endswith("_setting") and setting:
                            out[setting] = f"mailboxes[{i}].{key}.{inner}"
        for i, name in enumerate(self.signing.key_settings):
            out[name] = f"signing.key_settings[{i}]"
        for i, hook in enumerate(self.events.webhooks):
            out[hook.secret_setting] = f"events.webhooks[{i}].secret_setting"
        if any(isinstance(m, GraphMailbox) and not m.polling_only for m in self.mailboxes):
            out[self.graph.client_state_secret_setting] = "graph.client_state_secret_setting"
        return out


def _unique(problems: list[tuple[str, str]], where: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append((f"{where}[{i}].name", f"duplicate name {name!r}"))
        seen.add(name)


def _unknown(what: str, name: str, known: set[str]) -> str:
    return f"unknown {what} {name!r} (known: {', '.join(sorted(known)) or 'none'})"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("local", "imap", "graph", "ews", "function-after[_credential_named()]"):
            continue  # pydantic's discriminator tag, not a path in the file
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a `Config`; every problem is reported with its path in the file."""
    try:
        # libyaml's loader where built in: four times faster on a large configuration
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(where, f"YAML syntax error: {problem}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            source, [("", "the file must be a mapping with record_types and mailboxes")]
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            msg = re.sub(r"^(Value error|Assertion failed), ", "", err["msg"])
            if not err["loc"] and "; " in msg and ": " in msg:
                # Cross-reference problems come back as one message: split them to their paths.
                for part in msg.split("; "):
                    path, _, problem = part.partition(": ")
                    problems.append((path, problem))
                continue
            problems.append((_loc(err["loc"]), msg))
        raise ConfigError(source, problems) from exc
