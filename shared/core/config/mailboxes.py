"""Mailboxes by kind (local, IMAP, Graph, EWS), how they send, and what Graph mailboxes
with change notifications share."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from .base import NAME, SETTING, _Strict
from .oauth import EwsOAuth, GmailOAuth, ImapOAuth, _check_app_credentials, _oauth_provider
from .tasks import CalendarLinks, FlagTasks


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
        "names of a Sent folder; local none: a subfolder of a folder of .eml files, e.g. Sent)",
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
        # The whole path is sent mail, or the file's subfolder is one of `sent_folders`.
        return self.sent or super().is_sent_folder(folder)


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
