"""Mail named in log lines: one line whatever the sender wrote, Message-IDs out of keys."""

from __future__ import annotations

from shared.core.logtext import log_key, log_mail, log_text
from shared.core.message import id_key


def test_a_subject_cannot_forge_a_log_line_and_keeps_its_script() -> None:
    forged = "Счёт\r\n2026-12-07 INFO file: mailbox=x record=CASE-1"
    assert log_text(forged, limit=200) == repr(forged.encode("unicode_escape").decode("ascii"))
    assert "\n" not in log_text(forged) and "\r" not in log_text(forged)
    assert log_text("请求 帮助") == "'请求 帮助'"
    assert log_text("x" * 100, limit=10) == "'xxxxxxxxx…'"
    assert log_mail("abc@example.org", "Zugang gesperrt") == (
        "message-id='<abc@example.org>' subject='Zugang gesperrt'"
    )
    assert log_mail(None, "") == "message-id=- subject=''"


def test_a_key_is_logged_as_the_message_id_it_holds() -> None:
    assert log_key(id_key("письмо-7@example.org")) == "message-id='<письмо-7@example.org>'"
    long_key = id_key("x" * 500 + "@example.org")  # too long for hex: `h` + SHA-256
    assert log_key(long_key) == f"key={long_key[:40]}"
    assert log_key(id_key("a\r\nb@example.org")) == "message-id='<a\\\\r\\\\nb@example.org>'"
