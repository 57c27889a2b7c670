"""Fake Microsoft Entra ID token service and App Service managed identity endpoint.

- OpenID discovery ``GET /{tenant}/v2.0/.well-known/openid-configuration`` returns the v2.0
  metadata document (issuer, authorization_endpoint, token_endpoint, jwks_uri, ...), pointing
  back at the fake, which is what msal reads.
- ``POST /{tenant}/oauth2/v2.0/token`` implements the client credentials grant as "Microsoft
  identity platform and the OAuth 2.0 client credentials flow" (entra/identity-platform/
  v2-oauth2-client-creds-grant-flow) documents: client_secret or client_assertion
  (urn:ietf:params:oauth:client-assertion-type:jwt-bearer); success
  ``{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}``; errors
  ``{"error", "error_description": "AADSTS...", "error_codes", "timestamp", "trace_id",
  "correlation_id", "error_uri"}`` (401 invalid_client for a wrong secret).
- Managed identity on App Service / Functions ("Managed identities for App Service", REST endpoint
  reference): ``GET {IDENTITY_ENDPOINT}?resource=...&api-version=2019-08-01`` with header
  ``X-IDENTITY-HEADER``; answers ``{"access_token", "expires_on" (epoch seconds as a string),
  "resource", "token_type", "client_id"}``.

- Delegated sign-in for a public client ("Microsoft identity platform and the OAuth 2.0 device
  authorization grant flow", v2-oauth2-device-code): ``POST /{tenant}/oauth2/v2.0/devicecode``
  answers ``{"device_code", "user_code", "verification_uri", "expires_in", "interval",
  "message"}``; the token endpoint answers ``authorization_pending`` until a test approves the
  code (`approve_device`, what the user does in a browser), then the tokens with a
  ``refresh_token``, an ``id_token`` and ``client_info``. ``grant_type=refresh_token`` redeems
  (and rotates) a refresh token; `revoke_refresh_tokens` plays an admin revoking sessions
  (``invalid_grant``, AADSTS50173).

Access tokens are opaque random strings (real ones are JWTs clients must not parse).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.graph_model import JSON, GraphError, new_guid
from tests.fakes.graph_store import Clock

GRAPH_AUDIENCES = {"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"}
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


@dataclass
class App:
    tenant: str
    client_id: str
    secret: str | None
    object_id: str = field(default_factory=new_guid)


@dataclass
class Token:
    value: str
    tenant: str
    client_id: str
    principal_id: str
    audience: str
    expires_at: float
    kind: str


@dataclass
class Device:
    tenant: str
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    user: str | None = None  # set once the user approved the code


@dataclass
class Grant:
    """What a refresh token stands for: a user's consent to a client for a scope."""

    tenant: str
    client_id: str
    user: str
    scope: str
    revoked: bool = False


def entra_error(status: int, error: str, code: int, description: str) -> tuple[int, JSON]:
    trace, correlation = new_guid(), new_guid()
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
        f"Correlation ID: {correlation} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def _b64json(part: str) -> Any:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode()))


class TokenService:
    def __init__(self, lock: threading.RLock, clock: Clock) -> None:
        self.lock = lock
        self.clock = clock
        self.base_url = ""
        self.apps: dict[tuple[str, str], App] = {}
        self.tokens: dict[str, Token] = {}
        self.lifetime = 3599
        self.msi_header = secrets.token_urlsafe(16)
        self.msi_tenant = new_guid()
        self.msi_client_id = new_guid()
        self.msi_principal_id = new_guid()
        self.devices: dict[str, Device] = {}  # device_code -> the pending sign-in
        self.refresh_tokens: dict[str, Grant] = {}
        self.public_clients: set[str] = set()

    def add_public_client(self, tenant: str, client_id: str) -> App:
        """An app registration with "Allow public client flows" on (no secret)."""
        app = self.add_app(tenant, client_id)
        with self.lock:
            self.public_clients.add(client_id.lower())
        return app

    def device_code(self, tenant: str, form: dict[str, str]) -> tuple[int, JSON]:
        client_id = form.get("client_id", "")
        if client_id.lower() not in self.public_clients:
            return entra_error(
                400,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        user_code = secrets.token_hex(4).upper()
        device = Device(
            tenant=tenant,
            client_id=client_id,
            scope=form.get("scope", ""),
            user_code=user_code,
            expires_at=self._now() + 900,
        )
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.devices[code] = device
        return 200, {
            "user_code": user_code,
            "device_code": code,
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
            "interval": 1,
            "message": "To sign in, use a web browser to open the page "
            f"https://microsoft.com/devicelogin and enter the code {user_code} to authenticate.",
        }

    def approve_device(self, user_code: str, user: str) -> None:
        """The user signs in at the verification page and enters `user_code`."""
        with self.lock:
            for device in self.devices.values():
                if device.user_code == user_code:
                    device.user = user
                    return
        raise KeyError(user_code)

    def revoke_refresh_tokens(self, user: str) -> None:
        with self.lock:
            for grant in self.refresh_tokens.values():
                if grant.user == user:
                    grant.revoked = True

    def delegated(self, tenant: str, form: dict[str, str]) -> tuple[int, JSON]:
        """The device-code and refresh-token grants of a public client."""
        grant_type = form.get("grant_type")
        with self.lock:
            if grant_type == DEVICE_CODE:
                device = self.devices.get(form.get("device_code", ""))
                if device is None or device.expires_at < self._now():
                    return entra_error(
                        400,
                        "expired_token",
                        70020,
                        "The provided value for the input parameter 'device_code' is not valid.",
                    )
                if device.user is None:
                    return entra_error(
                        400,
                        "authorization_pending",
                        70016,
                        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                    )
                del self.devices[form["device_code"]]
                grant = Grant(device.tenant, device.client_id, device.user, device.scope)
            else:
                old = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
                if old is None or old.revoked:
                    return entra_error(
                        400,
                        "invalid_grant",
                        50173,
                        "The provided grant has expired due to it being revoked, a fresh auth "
                        "token is needed. The user might have changed or reset their password.",
                    )
                grant = old
        return 200, self._user_tokens(grant)

    def _user_tokens(self, grant: Grant) -> JSON:
        resource = next(
            (s.rsplit("/", 1)[0] for s in grant.scope.split() if s.startswith("https://")), ""
        )
        token = self._issue(grant.tenant, grant.client_id, grant.user, resource, "user")
        refresh = secrets.token_urlsafe(48)
        with self.lock:
            self.refresh_tokens[refresh] = grant
        oid = new_guid()
        claims = {
            "aud": grant.client_id,
            "iss": f"{self.base_url}/{grant.tenant}/v2.0",
            "iat": int(self._now()),
            "exp": int(self._now()) + 3600,
            "oid": oid,
            "sub": oid,
            "tid": grant.tenant,
            "preferred_username": grant.user,
            "name": grant.user,
        }

        def part(value: JSON) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        return {
            "token_type": "Bearer",
            "scope": grant.scope,
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": token.value,
            "refresh_token": refresh,
            "id_token": f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.",
            "client_info": part({"uid": oid, "utid": grant.tenant}),
        }

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def add_app(self, tenant: str, client_id: str, secret: str | None = None) -> App:
        with self.lock:
            app = App(tenant, client_id, secret)
            self.apps[(tenant.lower(), client_id.lower())] = app
            return app

    def known_tenant(self, tenant: str) -> bool:
        with self.lock:
            return any(t == tenant.lower() for t, _ in self.apps)

    def openid_configuration(self, tenant: str) -> tuple[int, JSON]:
        if not self.known_tenant(tenant):
            return entra_error(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        base = f"{self.base_url}/{tenant}"
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "nonce", "oid"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def _issue(
        self, tenant: str, client_id: str, principal: str, audience: str, kind: str
    ) -> Token:
        token = Token(
            value="fake" + secrets.token_urlsafe(32),
            tenant=tenant,
            client_id=client_id,
            principal_id=principal,
            audience=audience.rstrip("/"),
            expires_at=self._now() + self.lifetime,
            kind=kind,
        )
        with self.lock:
            self.tokens[token.value] = token
        return token

    def client_credentials(self, tenant: str, form: dict[str, str]) -> tuple[int, JSON]:
        if not self.known_tenant(tenant):
            return self.openid_configuration(tenant)
        if form.get("grant_type") != "client_credentials":
            return entra_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type', '')}'.",
            )
        client_id = form.get("client_id", "")
        with self.lock:
            app = self.apps.get((tenant.lower(), client_id.lower()))
        if app is None:
            return entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'.",
            )
        scopes = form.get("scope", "").split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {' '.join(scopes)} is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        assertion = form.get("client_assertion")
        if assertion is not None:
            problem = self._check_assertion(assertion, form, client_id)
            if problem:
                return entra_error(401, "invalid_client", 50027, problem)
        elif "client_secret" in form:
            if app.secret is None or form["client_secret"] != app.secret:
                return entra_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request "
                    "is the client secret value, not the client secret ID, for a secret added to "
                    f"app '{client_id}'.",
                )
        else:
            return entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        audience = scopes[0][: -len("/.default")]
        token = self._issue(app.tenant, app.client_id, app.object_id, audience, "app")
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": token.value,
        }

    def _check_assertion(self, assertion: str, form: dict[str, str], client_id: str) -> str | None:
        if form.get("client_assertion_type") != JWT_BEARER:
            return "client_assertion_type must be " + JWT_BEARER + "."
        parts = assertion.split(".")
        if len(parts) != 3 or not all(parts):
            return "JWT token is invalid or malformed."
        try:
            _b64json(parts[0])
            claims = _b64json(parts[1])
        except (ValueError, binascii.Error):
            return "JWT token is invalid or malformed."
        if not isinstance(claims, dict):
            return "JWT token is invalid or malformed."
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return "The client assertion's iss and sub claims must be the client id."
        if "/oauth2/v2.0/token" not in str(claims.get("aud", "")):
            return "The client assertion's aud claim must be the token endpoint."
        if float(claims.get("exp", 0)) < self._now():
            return "The client assertion has expired."
        return None

    def managed_identity(self, query: dict[str, str], headers: dict[str, str]) -> tuple[int, JSON]:
        if headers.get("x-identity-header") != self.msi_header:
            return 401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong."}
        if query.get("api-version") != "2019-08-01":
            return 400, {"statusCode": 400, "message": "api-version 2019-08-01 is required."}
        resource = query.get("resource")
        if not resource:
            return 400, {"statusCode": 400, "message": "The resource parameter is required."}
        client_id = query.get("client_id") or self.msi_client_id
        token = self._issue(self.msi_tenant, client_id, self.msi_principal_id, resource, "msi")
        return 200, {
            "access_token": token.value,
            "expires_on": str(int(token.expires_at)),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }

    def check_bearer(self, authorization: str | None) -> Token:
        """Graph's gate: a live token for https://graph.microsoft.com (or for this fake's own
        URL, as a national cloud's Graph accepts tokens for its own host) or 401."""
        challenge = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri='
            '"https://login.microsoftonline.com/common/oauth2/authorize", '
            f'client_id="{GRAPH_APP_ID}"'
        }
        if (
            not authorization
            or not authorization.lower().startswith("bearer ")
            or not (authorization[7:].strip())
        ):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        with self.lock:
            token = self.tokens.get(authorization[7:].strip())
        if token is None:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed, there are no dots (.).",
                challenge,
            )
        if token.expires_at <= self._now():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
                challenge,
            )
        if token.audience not in GRAPH_AUDIENCES and token.audience != self.base_url.rstrip("/"):
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                challenge,
            )
        return token

    def expire_tokens(self) -> None:
        with self.lock:
            for token in self.tokens.values():
                token.expires_at = 0.0
