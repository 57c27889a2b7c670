"""Sending through SMTP submission (RFC 6409), then a copy into the IMAP Sent folder.

STARTTLS (or implicit TLS) with certificate checks on; AUTH PLAIN/LOGIN with a password from
an app setting, or XOAUTH2 with the mailbox's IMAP token (Microsoft 365, Gmail). A refused
recipient or a server error raises `SendError`, which the outbound stage retries through its
queue.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.config import Smtp
from ..core.errors import MailfilerError


class SendError(OSError, MailfilerError):
    """The mail did not go out; safe to try again (nothing was accepted for delivery)."""


def send_smtp(
    smtp: Smtp,
    raw: bytes,
    sender: str,
    recipients: Sequence[str],
    *,
    token: Callable[[], str] | None = None,
) -> str:
    """Submit `raw`; returns the server's answer. `token`: XOAUTH2's access token."""
    context = None
    if smtp.tls != "none":
        if smtp.ca_bundle and not Path(smtp.ca_bundle).is_file():
            raise SendError(f"smtp {smtp.host}: ca_bundle {smtp.ca_bundle} is not a file")
        context = ssl.create_default_context(cafile=smtp.ca_bundle)
    where = f"smtp {smtp.host}:{smtp.server_port}"
    try:
        server: smtplib.SMTP
        if smtp.tls == "implicit":
            server = smtplib.SMTP_SSL(smtp.host, smtp.server_port, timeout=30, context=context)
        else:
            server = smtplib.SMTP(smtp.host, smtp.server_port, timeout=30)
        with server:
            server.ehlo()
            if smtp.tls == "starttls":
                server.starttls(context=context)
                server.ehlo()
            if smtp.auth == "password":
                password = os.environ.get(smtp.password_setting or "")
                if not password:
                    raise SendError(f"{where}: app setting {smtp.password_setting} is not set")
                server.login(smtp.username or sender, password)
            elif smtp.auth == "xoauth2":
                if token is None:
                    raise SendError(f"{where}: XOAUTH2 needs the mailbox's oauth settings")
                user, value = smtp.username or sender, token()
                server.auth(
                    "XOAUTH2",
                    lambda _challenge=None: f"user={user}\x01auth=Bearer {value}\x01\x01",
                    initial_response_ok=True,
                )
            refused = server.sendmail(sender, list(recipients), raw)
    except smtplib.SMTPRecipientsRefused as exc:
        raise SendError(f"{where}: every recipient refused: {sorted(exc.recipients)}") from exc
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        if isinstance(exc, SendError):
            raise
        raise SendError(f"{where}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if refused:
        # Accepted for the others: not an error to retry (that would send twice), but noted.
        return f"accepted; refused {sorted(refused)}"
    return "accepted"
