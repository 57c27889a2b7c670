"""SMTP submission the way servers demand it: STARTTLS with the certificate checked, AUTH by
password and by XOAUTH2; a server that keeps refusing sends the mail to `outbound-poison` with
its reason; discarded mail forwarded to an administrator."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from shared.cli.azurite import Azurite, free_port
from shared.core.config import parse_config
from shared.core.contracts import OutboundMail
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings
from shared.store.stores import NOTICES, OUTBOUND, Stores, poison
from tests.fakes.gmail import FakeGoogleOAuth
from tests.fakes.tls import server_context, shared_tls

from .helpers import local_host
from .test_outbound import SIGNING, Instance, Sink, mail

pytestmark = pytest.mark.azurite
PASSWORD = "smtp-password"


class Gate(Sink):
    """A sink that checks AUTH: a password, or an XOAUTH2 bearer token."""

    oauth: FakeGoogleOAuth | None = None
    logins: list[str]

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
        if ok:
            self.logins.append(f"{mechanism}:{data.login.decode()}")
        return AuthResult(success=ok, handled=False)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        text = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
        fields = dict(p.split("=", 1) for p in text.split("\x01") if "=" in p)
        token = fields.get("auth", "").removeprefix("Bearer ")
        user = self.oauth.user_of(token) if self.oauth else None
        ok = user is not None and user == fields.get("user")
        if ok:
            self.logins.append(f"XOAUTH2:{user}")
        return AuthResult(success=ok, handled=False)


def gate(**smtp: Any) -> tuple[Gate, Controller]:
    found = Gate(free_port())
    found.logins = []
    files = shared_tls()
    controller = Controller(
        found,
        hostname="127.0.0.1",
        port=found.port,
        tls_context=server_context(files),
        require_starttls=True,
        authenticator=found.authenticate,
        **smtp,
    )
    controller.start()
    return found, controller


def instance(stores: Stores, azurite: Azurite, root: Path, smtp: str, extra: str = "") -> Instance:
    text = f"""
record_types: [{{name: case, prefix: CASE}}]
mailboxes:
  - name: support
    kind: local
    path: "{{folder}}"
    record_type: case
    addresses: [support@case.example]
    smtp: {smtp}
routes:
  - {{name: all, record_type: case, acknowledge: true{extra}}}
signing: {{key_settings: [{SIGNING}]}}
"""
    return Instance(stores, azurite, root, text)


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SIGNING, "a-signing-key-of-32-bytes-length")
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    yield
    set_context(None)


def test_starttls_with_the_certificate_checked_and_a_password(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    sink, controller = gate()
    try:
        smtp = (
            f"{{host: 127.0.0.1, port: {sink.port}, tls: starttls, ca_bundle: "
            f"'{shared_tls().ca_file}', username: support@case.example, "
            "password_setting: SMTP_PASSWORD, sent_folder: null}"
        )
        one = instance(stores, azurite, tmp_path, smtp)
        one.deliver(mail(1))
        one.run()
    finally:
        controller.stop()
    assert sink.logins == ["LOGIN:support@case.example"] or sink.logins == [
        "PLAIN:support@case.example"
    ]
    (ack,) = sink.messages()
    assert ack["Subject"] == "[CASE-1] Printer 1 broken"


def test_without_the_ca_the_certificate_is_refused_and_the_mail_ends_in_poison(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    sink, controller = gate()
    try:
        smtp = (
            f"{{host: 127.0.0.1, port: {sink.port}, tls: starttls, username: s@case.example,"
            " password_setting: SMTP_PASSWORD}"
        )
        one = instance(stores, azurite, tmp_path, smtp)
        one.deliver(mail(1))
        one.run()  # five attempts (host.json maxDequeueCount), then poison
    finally:
        controller.stop()
    assert sink.received == [] and sink.logins == []
    (message,) = stores.queues.receive(poison(OUTBOUND), max_messages=5, visibility_timeout=1)
    reason = json.loads(message.body)["reason"]
    assert "failed 5 times" in reason and "CERTIFICATE_VERIFY_FAILED" in reason, reason
    (notice,) = stores.table(NOTICES).all()
    assert notice["Sent"] is False


def test_xoauth2_with_a_gmail_token(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeGoogleOAuth() as oauth:
        oauth.add_client("client-1", "client-secret")
        sink, controller = gate()
        sink.oauth = oauth
        refresh = oauth.issue_refresh_token("client-1", "support@case.example")
        try:
            text = f"""
record_types: [{{name: case, prefix: CASE}}]
mailboxes:
  - name: gmail
    kind: imap
    host: imap.gmail.example
    username: support@case.example
    auth: xoauth2
    oauth: {{provider: google, client_id: client-1, client_secret_setting: G_SECRET,
             refresh_token_setting: G_REFRESH, token_endpoint: '{oauth.token_uri}'}}
    smtp: {{host: 127.0.0.1, port: {sink.port}, tls: starttls, ca_bundle: '{shared_tls().ca_file}',
            auth: xoauth2, sent_folder: null}}
    record_type: case
"""
            monkeypatch.setenv("G_SECRET", "client-secret")
            monkeypatch.setenv("G_REFRESH", refresh)
            config = parse_config(text)
            settings = AppSettings.model_validate(
                {"AzureWebJobsStorage": azurite.connection_string}
            )
            ctx = AppContext(settings, config, tmp_path, stores)
            set_context(ctx)
            stores.queues.send(
                OUTBOUND,
                OutboundMail(
                    id="reply-xoauth2",
                    kind="reply",
                    mailbox="gmail",
                    to=("ann@example.org",),
                    subject="Hello",
                    body="Hi Ann.",
                ),
            )
            local_host(stores.queues, visibility_timeout=0).drain()
        finally:
            controller.stop()
    assert sink.logins == ["XOAUTH2:support@case.example"]
    ((sender, recipients, raw),) = sink.received
    assert sender == "support@case.example" and recipients == ["ann@example.org"]
    assert message_from_bytes(raw, policy=default)["Subject"] == "Hello"


def test_discarded_mail_is_forwarded_to_the_administrator_with_the_original_attached(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    found = Sink(free_port())
    controller = Controller(found, hostname="127.0.0.1", port=found.port)
    controller.start()
    try:
        smtp = f"{{host: 127.0.0.1, port: {found.port}, tls: none, auth: none}}"
        policy = (
            ", senders: {unknown: forward, forward_to: admin@case.example,"
            " allowed_domains: [partner.example]}"
        )
        one = instance(stores, azurite, tmp_path, smtp, policy)
        one.deliver(mail(1))
        one.run()
    finally:
        controller.stop()
    ((_, recipients, raw),) = found.received
    forward = message_from_bytes(raw, policy=default)
    assert recipients == ["admin@case.example"]
    assert forward["Auto-Submitted"] == "auto-replied"
    (attached,) = [
        p for p in forward.iter_attachments() if p.get_content_type() == "message/rfc822"
    ]
    assert attached.get_content()["Message-ID"] == "<p1@example.org>"
