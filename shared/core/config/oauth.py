"""Entra ID and Google credentials of mailboxes: named app settings, never secrets."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from .base import SETTING, _Strict


def _check_app_credentials(auth: str, client_id: str | None, where: Any) -> None:
    """An Entra app's credential is named the way its `auth` needs (Graph, IMAP XOAUTH2)."""
    if auth == "client_secret" and not (client_id and where.client_secret_setting):
        raise ValueError("auth 'client_secret' needs client_id and client_secret_setting")
    if auth == "certificate" and not (client_id and where.certificate_setting):
        raise ValueError("auth 'certificate' needs client_id and certificate_setting")
    if auth == "workload_identity" and not client_id:
        raise ValueError("auth 'workload_identity' needs client_id")


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
