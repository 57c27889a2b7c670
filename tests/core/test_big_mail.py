"""Big mail: parsed with its base64 runs standing aside, it must read exactly as the stdlib
reads it whole (attachments byte for byte, embedded mail, text), and its text is bounded."""

from __future__ import annotations

import base64
import os
import quopri
from email import policy
from email.message import Message
from email.parser import BytesParser

from shared.core import mime
from shared.core.hollow import HOLLOW_MIN_BYTES, hollow
from shared.core.mime import attachment_contents, parse_message


def b64(data: bytes, width: int = 76) -> bytes:
    text = base64.b64encode(data)
    return b"\r\n".join(text[i : i + width] for i in range(0, len(text), width))


def big_mail() -> tuple[bytes, dict[str, bytes]]:
    """A mail over the hollowing size: a run that ends right at a boundary, one with odd line
    widths, an embedded mail with its own base64 attachment, and a quoted-printable part."""
    first = os.urandom(3 * 1024 * 1024)
    second = os.urandom(2 * 1024 * 1024 + 5)
    inner = os.urandom(300 * 1024)
    qp_text = ("Счёт № 42 — оплата ✓\n" * 2000).encode("utf-8")
    embedded = (
        b"Message-ID: <inner@example.com>\r\nSubject: inner\r\n"
        b'Content-Type: multipart/mixed; boundary="in"\r\n\r\n'
        b"--in\r\nContent-Type: text/plain\r\n\r\ninner text\r\n"
        b'--in\r\nContent-Type: application/octet-stream; name="inner.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(inner) + b"\r\n--in--\r\n"
    )
    raw = (
        b"Message-ID: <big@example.com>\r\nFrom: =?utf-8?b?0JDQvdC90LA=?= <anna@example.ru>\r\n"
        b'Subject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="out"\r\n'
        b"\r\n--out\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "Добрый день, файлы во вложении.\r\n".encode()
        + b'--out\r\nContent-Type: application/pdf; name="one.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + b64(first)
        + b"\r\n--out\r\n"  # the run ends right at the boundary: no blank line
        b'Content-Type: image/png; name="two.png"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + b64(second, width=64)
        + b"\r\n\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n"
        + embedded
        + b'\r\n--out\r\nContent-Type: text/csv; charset=utf-8; name="t.csv"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + quopri.encodestring(qp_text).replace(b"\n", b"\r\n")
        + b"\r\n--out--\r\n"
    )
    return raw, {"one.pdf": first, "two.png": second, "t.csv": qp_text}


def stdlib_attachments(raw: bytes) -> list[bytes]:
    """What the stdlib reads whole, for comparison: every non-text leaf's bytes."""
    message = BytesParser(policy=policy.compat32).parsebytes(raw)
    out: list[bytes] = []
    parts = [message]
    while parts:  # depth first, not into embedded mail (its parts are not ours)
        part = parts.pop(0)
        if part.get_content_maintype() == "multipart":
            parts[:0] = [p for p in part.get_payload() if isinstance(p, Message)]
        elif part.get_content_maintype() == "message":
            render = policy.compat32.clone(linesep="\r\n")
            subs = [s for s in part.get_payload() if isinstance(s, Message)]
            out.append(b"".join(s.as_bytes(policy=render) for s in subs))
        elif part.get_content_type() != "text/plain":
            data = part.get_payload(decode=True)
            assert isinstance(data, bytes)
            out.append(data)
    return out


def test_big_mail_parses_with_its_runs_aside_and_reads_the_same() -> None:
    raw, files = big_mail()
    assert len(raw) > HOLLOW_MIN_BYTES
    shell = hollow(raw)
    assert len(shell.runs) == 3 and len(shell.data) < 256 * 1024  # the embedded one too
    got = attachment_contents(raw)
    assert [a.filename for a, _ in got] == ["one.pdf", "two.png", None, "t.csv"]
    assert [data for _, data in got] == stdlib_attachments(raw)
    assert got[0][1] == files["one.pdf"] and got[1][1] == files["two.png"]
    assert got[3][1] == files["t.csv"].replace(b"\n", b"\r\n")  # the mail's line ends
    msg = parse_message(raw, mailbox="m", source_id="s")
    assert msg.text == "Добрый день, файлы во вложении."  # its line end is the boundary's
    assert [a.size for a in msg.attachments] == [len(data) for _, data in got]
    assert msg.from_ is not None and msg.from_.name == "Анна"
    assert not any(d.startswith("parser-failed") for d in msg.defects)


def test_a_mail_holding_the_marker_gets_another() -> None:
    raw, files = big_mail()
    raw = raw.replace(b"Subject: big", b"Subject: mailfiler-run0- mailfiler-run1")
    shell = hollow(raw)
    assert shell.marker == "mailfiler-run2-"
    got = dict((a.filename, data) for a, data in attachment_contents(raw))
    assert got["one.pdf"] == files["one.pdf"] and got["two.png"] == files["two.png"]


def test_a_huge_text_part_is_read_from_its_start_only() -> None:
    line = "Строка текста 文字 👍🏽\n"
    text = line * (3 * mime.MAX_TEXT_BYTES // len(line.encode()))
    raw = (
        b"Message-ID: <long@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(text.encode())
    )
    msg = parse_message(raw, mailbox="m", source_id="s")
    assert "text-truncated" in msg.defects
    assert 0 < len(msg.text.encode()) <= mime.MAX_TEXT_BYTES
    assert text.startswith(msg.text)  # cut between whole characters: no replacement mark
    assert "\ufffd" not in msg.text
