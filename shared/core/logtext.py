"""Text from mail as it goes into a log line: one line, printable, short.

A subject or a Message-ID is the sender's to write: a CR/LF in it could forge a log line, and a
control character could garble a terminal. Bodies never go into logs; subjects do, cut short.
"""

from __future__ import annotations

LIMIT = 80


def log_text(value: str | None, limit: int = LIMIT) -> str:
    """`value` quoted, with anything unprintable escaped, cut to `limit` characters."""
    if value is None:
        return "-"
    text = value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return repr(text)


def log_mail(message_id: str | None, subject: str | None) -> str:
    """A mail as people name it in a log line: `message-id='<id>' subject='...'`."""
    mid = f"<{message_id.strip('<>')}>" if message_id else None
    return f"message-id={log_text(mid)} subject={log_text(subject)}"


def log_key(key: str) -> str:
    """A message key as people name the mail: its Message-ID when the key holds it (the hex of
    a short Message-ID, shared/core/message.py), else the key (a long or missing Message-ID)."""
    try:
        message_id = bytes.fromhex(key).decode("utf-8")
    except ValueError:  # `h`/`s` + SHA-256, or not hex at all
        return f"key={key[:40]}"
    return f"message-id={log_text(f'<{message_id}>')}"
