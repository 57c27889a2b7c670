"""Which adapter serves which mailbox kind."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.config import Config, GmailOAuth, GraphMailbox, ImapMailbox
from ..core.errors import MailfilerError
from ..store.stores import Stores
from .base import MailboxSource
from .local import LocalSource

if TYPE_CHECKING:
    from .graph.source import GraphSource


class SourceUnavailable(RuntimeError, MailfilerError):
    """The mailbox cannot be read now (not configured, not supported yet, unreachable)."""


def open_source(config: Config, name: str, base_dir: Path, stores: Stores) -> MailboxSource:
    mailbox = config.mailbox(name)
    if mailbox is None:
        raise SourceUnavailable(f"mailbox {name!r} is not in the configuration")
    if mailbox.kind == "local":
        path = Path(mailbox.path)
        return LocalSource(path if path.is_absolute() else base_dir / path)
    if isinstance(mailbox, GraphMailbox):
        return graph_source(mailbox, stores)
    if mailbox.kind == "imap":
        from .imap.source import ImapSource

        if mailbox.auth == "xoauth2" and mailbox.oauth is not None:
            return ImapSource(mailbox, imap_token(mailbox, stores))
        secret = os.environ.get(mailbox.password_setting or "")
        if not secret:
            raise SourceUnavailable(
                f"mailbox {name!r}: app setting {mailbox.password_setting} is not set"
            )
        return ImapSource(mailbox, secret)
    if mailbox.kind == "ews":
        # Imported here: exchangelib (and lxml) only for EWS mailboxes.
        from .ews.connection import EwsConfigError
        from .ews.source import EwsSource

        try:
            return EwsSource(mailbox)
        except EwsConfigError as exc:
            raise SourceUnavailable(f"mailbox {name!r}: {exc}") from exc
    raise SourceUnavailable(
        f"mailbox {name!r}: the {mailbox.kind} source is not implemented in this version"
    )


def graph_source(mailbox: GraphMailbox, stores: Stores) -> GraphSource:
    """A Graph mailbox's source as Graph's own stages (the fetch stage, calendar links) use
    it, with its Graph-only calls; every other stage goes through `open_source`."""
    # Imported here: only Graph mailboxes pay for httpx and msal.
    from .graph.auth import GraphAuthError, provider_for
    from .graph.client import GraphClient
    from .graph.source import GraphSource

    try:
        tokens = provider_for(mailbox)
    except GraphAuthError as exc:
        raise SourceUnavailable(f"mailbox {mailbox.name!r}: {exc}") from exc
    return GraphSource(mailbox, GraphClient(mailbox.graph_endpoint, tokens), stores)


def imap_token(mailbox: ImapMailbox, stores: Stores) -> str:
    """XOAUTH2's access token: an app's (msal, azure-identity), a signed-in person's (device
    code), or Gmail's (refresh token)."""
    from .graph.auth import GraphAuthError, provider_for
    from .imap.oauth import ImapAuthError, delegated_token, google_token

    oauth = mailbox.oauth
    now = datetime.now(UTC)
    try:
        if isinstance(oauth, GmailOAuth):
            return google_token(mailbox, stores, now)
        assert oauth is not None
        if oauth.auth == "device_code":
            return delegated_token(mailbox, stores, now)
        return provider_for(oauth, scope=oauth.token_scope).token()
    except (GraphAuthError, ImapAuthError) as exc:
        raise SourceUnavailable(f"mailbox {mailbox.name!r}: {exc}") from exc
