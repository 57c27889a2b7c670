"""The first map decision: dedupe, threads, new conversations, routes by recipient."""

from __future__ import annotations

from shared.core.config import parse_config
from shared.core.contracts import RecordRef
from shared.core.decide import FiledMessage, Known, decide, record_key
from shared.core.message import MailMessage, id_key
from shared.core.mime import parse_message

CONFIG = parse_config(
    """
record_types: [{name: case, prefix: CASE}, {name: invoice, prefix: INV}]
mailboxes:
  - {name: support, kind: local, path: x, record_type: case,
     after_filing: {mark_read: true, move_to: Done}}
  - {name: other, kind: local, path: y, record_type: case}
routes:
  - {name: billing, to: billing@example.com, record_type: invoice, fields: {ProblemType: Billing}}
"""
)


def mail(headers: str, mailbox: str = "support", folder: str | None = "INBOX") -> MailMessage:
    raw = (headers.strip() + "\n\nbody\n").encode()
    return parse_message(raw, mailbox=mailbox, source_id="src-1", folder=folder)


ROOT = "From: a@example.com\nTo: support@example.com\nSubject: Help\nMessage-ID: <root@x>"
REPLY = (
    "From: b@example.com\nTo: a@example.com\nSubject: Re: Help\nMessage-ID: <r2@x>\n"
    "In-Reply-To: <r1@x>\nReferences: <root@x> <r1@x>"
)
CASE_1 = RecordRef(type="case", key="k1")


def test_new_conversation_creates_a_record_keyed_by_its_own_id() -> None:
    plan = decide(mail(ROOT), Known(), CONFIG, blob="b")
    assert plan.action == "create"
    assert plan.record == RecordRef(type="case", key=record_key("case", id_key("root@x")))
    assert plan.root and plan.title == "Help"
    assert [a.action for a in plan.mailbox_actions] == ["mark_read", "move"]
    assert "new conversation" in plan.reasons[0]


def test_reply_whose_thread_is_unknown_creates_the_roots_record() -> None:
    plan = decide(mail(REPLY), Known(), CONFIG, blob="b")
    assert plan.action == "create" and not plan.root
    # The same key the root itself would create: whichever is filed first, both meet there.
    assert plan.record == decide(mail(ROOT), Known(), CONFIG, blob="b").record
    assert "conversation root <root@x>" in plan.reasons[0]


def test_reply_attaches_to_the_newest_filed_message_of_its_thread() -> None:
    older, newer = RecordRef(type="case", key="old"), RecordRef(type="case", key="new")
    plan = decide(mail(REPLY), Known(thread={"root@x": older, "r1@x": newer}), CONFIG, blob="b")
    assert (plan.action, plan.record) == ("attach", newer)
    assert plan.reasons == ("In-Reply-To <r1@x> is filed on case new",)
    plan = decide(mail(REPLY), Known(thread={"root@x": older}), CONFIG, blob="b")
    assert plan.record == older and plan.reasons[0].startswith("References <root@x>")


def test_known_message_from_the_same_place_is_a_redelivery() -> None:
    filed = FiledMessage(record=CASE_1, mailbox="support", source_id="src-1", folder="INBOX")
    plan = decide(mail(ROOT), Known(filed=filed), CONFIG, blob="b")
    assert (plan.action, plan.record, plan.entry) == ("sighting", CASE_1, None)
    assert "redelivery" in plan.reasons[0]
    # A crash after filing may have skipped the mailbox actions: a redelivery runs them again.
    assert [a.action for a in plan.mailbox_actions] == ["mark_read", "move"]


def test_known_message_in_another_folder_is_a_move() -> None:
    filed = FiledMessage(record=CASE_1, mailbox="support", source_id="src-1", folder="INBOX")
    plan = decide(mail(ROOT, folder="Archive"), Known(filed=filed), CONFIG, blob="b")
    assert plan.action == "sighting" and plan.folder == "Archive"
    assert "moved from folder 'INBOX' to 'Archive'" in plan.reasons[0]
    assert plan.mailbox_actions == ()  # someone moved it: do not move it back


def test_known_message_in_another_mailbox_is_another_sighting() -> None:
    filed = FiledMessage(record=CASE_1, mailbox="support", source_id="src-1", folder="INBOX")
    plan = decide(mail(ROOT, mailbox="other"), Known(filed=filed), CONFIG, blob="b")
    assert plan.action == "sighting" and plan.mailbox == "other"
    assert "already filed from mailbox 'support'" in plan.reasons[0]
    assert plan.mailbox_actions == ()  # mailbox "other" has no after_filing actions


def test_route_by_recipient_with_plus_addressing_sets_type_and_fields() -> None:
    plan = decide(mail(ROOT.replace("support@", "Billing+urgent@")), Known(), CONFIG, blob="b")
    assert plan.record is not None and plan.record.type == "invoice"
    assert plan.fields == {"ProblemType": "Billing"}
    assert "route 'billing' matched recipient billing@example.com" in plan.reasons[0]
    plan = decide(mail(ROOT.replace("support@", "billingx@")), Known(), CONFIG, blob="b")
    assert plan.record is not None and plan.record.type == "case"


def test_entry_carries_what_the_timeline_shows() -> None:
    plan = decide(mail(ROOT), Known(), CONFIG, blob="b")
    assert plan.entry is not None
    assert (plan.entry.subject, plan.entry.from_, plan.entry.snippet) == (
        "Help",
        "a@example.com",
        "body",
    )
