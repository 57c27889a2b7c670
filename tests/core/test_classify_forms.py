"""Delay and warning DSNs in their common non-RFC forms are machine mail (issue 17, point 4).

One mail per form in tests/data/dsn_forms/, written after each mail system's own notice text
(see its README: reproductions, not captured mail); `expected.csv` gives the class, DSN action
and final recipient of each. Near misses, people writing the same words, stay human.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from shared.core.classify import classify
from shared.core.mime import parse_message

FORMS = Path(__file__).resolve().parents[1] / "data" / "dsn_forms"
with (FORMS / "expected.csv").open(encoding="utf-8", newline="") as _handle:
    EXPECTED = list(csv.DictReader(_handle))

SYSTEMS = (
    "sendmail",
    "postfix",
    "exim",
    "qmail",
    "exchange",
    "gmail",
    "yahoo",
    "domino",
    "courier",
    "mdaemon",
)


def test_every_form_has_a_file_and_every_system_a_delay_or_failure() -> None:
    files = {row["file"] for row in EXPECTED}
    assert files == {p.name for p in FORMS.glob("*.eml")}
    for system in SYSTEMS:
        assert any(f.startswith(system + "-") for f in files), system
    # Delay notices of every system that sends them as text.
    delays = {row["file"].split("-")[0] for row in EXPECTED if row["action"] == "delayed"}
    assert delays >= set(SYSTEMS), set(SYSTEMS) - delays


@pytest.mark.parametrize("row", EXPECTED, ids=lambda row: row["file"])
def test_form_is_machine_mail_with_its_dsn(row: dict[str, str]) -> None:
    path = FORMS / row["file"]
    result = classify(parse_message(path.read_bytes(), mailbox="forms", source_id=path.name))
    assert result.kind == row["kind"], (row["form"], result.reasons)
    assert result.reasons, "a machine class always says why"
    assert result.dsn is not None
    assert result.dsn.action == row["action"], row["form"]
    assert result.dsn.final_recipient == (row["final_recipient"] or None)
    assert result.dsn.permanent is (row["action"] == "failed")


def test_the_issue_17_delay_notice() -> None:
    # "Warning--Could not send mail for past 8.5 hours" from MAILER-DAEMON, no report part:
    # classified human before, and it opened a record.
    path = FORMS / "sendmail-delay-issue17.eml"
    result = classify(parse_message(path.read_bytes(), mailbox="forms", source_id=path.name))
    assert result.kind == "bounce"
    assert any("Warning--Could not send mail" in r for r in result.reasons), result.reasons
    assert result.dsn is not None
    assert (result.dsn.action, result.dsn.original_message_id) == (
        "delayed",
        "order-1842@example.com",
    )


def _person(subject: str, body: str, sender: str = "Jane Doe <jane@person.example>") -> str:
    return classify(
        parse_message(
            (
                f"From: {sender}\r\nTo: support@ours.example\r\nSubject: {subject}\r\n"
                f"Message-ID: <p1@person.example>\r\nDate: Mon, 7 Dec 2026 09:00:00 +0100\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
            ).encode(),
            mailbox="forms",
            source_id="p1",
        )
    ).kind


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("I could not send mail for the past 8 hours", "Our server will keep trying, I hope."),
        ("Re: Warning: could not send message for past 4 hours", "Is this about my invoice?"),
        ("Delivery delayed for order 1234?", "The parcel has not been delivered yet."),
        ("Fw: Delivery Status Notification (Delay)", "What does this mean? 配送が遅れています"),
        ("Письмо не отправлено", "Моё сообщение не доставлено, помогите."),
        ("تأخر التسليم", "لم يتم إرسال رسالتي بعد"),
    ],
)
def test_people_writing_the_same_words_stay_human(subject: str, body: str) -> None:
    assert _person(subject, body) == "human"
