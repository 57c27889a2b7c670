"""Every real-world mail in tests/data/corpora parses, and a few parse to known values.

The corpora live in the repo (tests/data/corpora, see its READMEs); a missing one fails the
run. The reply bodies (.txt) have no headers and are parsed as raw mail too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.core.message import Address, id_key
from shared.core.mime import parse_message

CORPORA = Path(Path(__file__).resolve().parents[1] / "data" / "corpora")
FILES = sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.suffix in {".eml", ".txt"})


def test_corpus_is_the_expected_size() -> None:
    assert len([p for p in FILES if p.suffix == ".eml"]) >= 300
    assert len([p for p in FILES if p.suffix == ".txt"]) >= 80


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPORA)))
def test_every_corpus_file_parses(path: Path) -> None:
    raw = path.read_bytes()
    msg = parse_message(raw, mailbox="corpus", source_id=path.name)
    assert msg.key
    assert msg.raw == raw
    assert msg.size == len(raw)
    assert msg.date is None or msg.date.tzinfo is not None
    # Real mail parses in full: the never-raise fallback (no body, no headers) must not be
    # what satisfies the checks here.
    assert not [d for d in msg.defects if d.startswith("parser-failed")], msg.defects
    if path.suffix == ".eml":
        assert msg.headers, "a mail file with a header block parses to its headers"
    # Everything we hand on must survive UTF-8 encoding (Table Storage, JSON).
    for value in (msg.subject, msg.text, *(v for _, v in msg.headers)):
        value.encode("utf-8")
    if path.suffix == ".txt":
        assert msg.text.strip(), "a headerless reply body must come through as text"


def test_office365_bounce() -> None:
    msg = parse_message(
        (CORPORA / "bounces/flanker/office365.eml").read_bytes(), mailbox="c", source_id="o365"
    )
    assert msg.message_id == (
        "2ab24bbc-78da-492a-9f68-438ddae558bb@DB5PR06MB1800.eurprd06.prod.outlook.com"
    )
    assert msg.subject == "Undeliverable: test_bounce 8"
    assert msg.normalized_subject == "Undeliverable: test_bounce 8"
    assert msg.date == datetime(2017, 10, 13, 11, 10, 16, tzinfo=UTC)
    assert [a.content_type for a in msg.attachments] == [
        "message/delivery-status",
        "message/rfc822",
    ]
    assert msg.defects == ()


def test_gmail_reply() -> None:
    msg = parse_message(
        (CORPORA / "replies/talon/gmail.eml").read_bytes(), mailbox="c", source_id="gmail"
    )
    assert msg.message_id == "CAKsfaBW4hj0Gek6TwbR3erng4P1y0CZzJ0d=pXtCNnYnbe7PLg@mail.gmail.com"
    assert msg.key == id_key(msg.message_id)
    assert msg.subject == "Re: Test"
    assert msg.normalized_subject == "Test"
    assert msg.from_ == Address("xxx@gmail.com", "Megan One")
    assert msg.date == datetime(2012, 4, 2, 20, 21, 52, tzinfo=timezone(timedelta(hours=4)))
    assert msg.text.startswith("Hello\n")


def test_rfc2047_subject_in_human_mail() -> None:
    msg = parse_message(
        (CORPORA / "bounces/sisimai/is-not-bounce-01.eml").read_bytes(), mailbox="c", source_id="x"
    )
    assert msg.message_id == "51e458a6.21eb420a.5f83.4ce2@mx.example.com"
    assert msg.subject == "にゃんこ"
    assert msg.from_ == Address("shironeko@example.com", "Kijitora")


def test_abuse_report_keeps_the_reported_mail_out_of_the_body() -> None:
    msg = parse_message(
        (CORPORA / "bounces/sisimai/arf-22.eml").read_bytes(), mailbox="c", source_id="arf"
    )
    assert msg.message_id == "CAT0-NNE-000000000000000022@CAT0-RRR.example.org"
    assert msg.subject == "complaint about message from 192.0.2.222"
    assert "Nyaan" not in msg.text
    assert [a.content_type for a in msg.attachments] == ["message/rfc822"]


def test_mislabelled_japanese_bounce_is_readable() -> None:
    msg = parse_message(
        (CORPORA / "bounces/sisimai/lhost-ezweb-02.eml").read_bytes(), mailbox="c", source_id="e"
    )
    assert msg.message_id == "20110901083506.FFFFFFF1@lsean.ezweb.ne.jp"
    assert msg.subject == "Mail System Error - Returned Mail"
    assert "送信できませんでした" in msg.text


def test_headerless_reply_body_is_kept_whole() -> None:
    path = CORPORA / "replies/crisp/email_german.txt"
    msg = parse_message(path.read_bytes(), mailbox="c", source_id="g")
    expected = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    assert msg.text == expected
    assert msg.message_id is None
    assert msg.key.startswith("s")
