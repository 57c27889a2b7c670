"""The routing engine's scenario table: every rule of the decision, one case or more each."""

from __future__ import annotations

from shared.core.classify import Classification
from shared.core.config import Config, parse_config
from shared.core.contracts import FilingPlan, RecordRef
from shared.core.decide import (
    Contact,
    FiledMessage,
    Known,
    RecordInfo,
    decide,
    lookups,
    record_key,
)
from shared.core.message import MailMessage, id_key
from shared.core.mime import parse_message
from shared.core.signing import signed_message_id, signed_ref_header
from shared.store.queues import decode, encode

KEY = b"test-signing-key"
CONFIG_TEXT = """
record_types:
  - name: case
    prefix: CASE
    fields:
      - {name: Priority, type: int, on_update: true}
      - {name: ProblemType, type: choice, choices: [Billing, Technical]}
      - {name: Due, type: date}
  - name: invoice
    prefix: INV
    updates_from: contacts
  - name: guarded
    prefix: GRD
    subject_guard: true
  - name: project
    prefix: PRJ
    updates_from: thread
mailboxes:
  - {name: support, kind: local, path: x, record_type: case,
     addresses: [support@example.com], after_filing: {mark_read: true, move_to: Done},
     sent_folders: [Sent], authserv_id: mx.example.com}
  - {name: other, kind: local, path: y, record_type: case}
routes:
  - {name: billing, to: billing@example.com, record_type: invoice, fields: {Channel: mail},
     acknowledge: true}
  - {name: sales, to: sales@example.com, record_type: case, tags: [sales]}
  - {name: noise, sender_domain: spam.example, action: discard}
  - {name: alerts, subject: '^\\[ALERT\\]', action: ignore}
  - {name: strict, to: vip@example.com, record_type: case,
     senders: {unknown: guest, allowed_domains: [partner.example]}}
  - {name: closed, to: closed@example.com, record_type: case, senders: {unknown: reject}}
  - {name: quiet, to: quiet@example.com, record_type: case, senders: {unknown: discard}}
  - {name: fwd, to: fwd@example.com, record_type: case,
     senders: {unknown: forward, forward_to: admin@example.com}}
  - {name: careful, to: careful@example.com, record_type: case, subject_guard: true}
  - {name: scans, to: scans@example.com, has_attachments: true, record_type: case,
     headers: {X-Scanner: '^ACME'}}
rate_limit: {per_sender: 3, window_minutes: 60, allow: ['@trusted.example']}
"""
CONFIG = parse_config(CONFIG_TEXT)
CASE_1 = RecordRef(type="case", key="k1")
ALICE = Contact(address="alice@example.org", kind="contact")


def mail(
    headers: str,
    body: str = "body",
    mailbox: str = "support",
    folder: str | None = "INBOX",
    conversation_id: str | None = None,
) -> MailMessage:
    raw = (headers.strip() + "\n\n" + body + "\n").encode()
    return parse_message(
        raw, mailbox=mailbox, source_id="src-1", folder=folder, conversation_id=conversation_id
    )


def one(message: MailMessage, known: Known | None = None, config: Config = CONFIG) -> FilingPlan:
    plans = decide(message, known or Known(sender=ALICE), config, blob="b", signing_keys=[KEY])
    assert len(plans) == 1, plans
    # Every plan survives the queue: encoded as the map stage sends it, decoded as file reads it.
    assert decode(encode(plans[0]), FilingPlan) == plans[0]
    return plans[0]


ROOT = "From: alice@example.org\nTo: support@example.com\nSubject: Help\nMessage-ID: <root@x>"
REPLY = (
    "From: bob@example.org\nTo: alice@example.org\nSubject: Re: Help\nMessage-ID: <r2@x>\n"
    "In-Reply-To: <r1@x>\nReferences: <root@x> <r1@x>"
)


# --- new conversations ---------------------------------------------------------------------


def test_new_conversation_creates_a_record_keyed_by_its_own_id() -> None:
    plan = one(mail(ROOT))
    assert plan.action == "create"
    assert plan.record == RecordRef(type="case", key=record_key("case", id_key("root@x")))
    assert plan.root and plan.title == "Help"
    assert [a.action for a in plan.mailbox_actions] == ["mark_read", "move"]
    assert plan.reasons[0].startswith("classified human")
    assert any(
        "new conversation (mailbox 'support' default record type)" in r for r in plan.reasons
    )


def test_reply_whose_thread_is_unknown_creates_the_roots_record() -> None:
    plan = one(mail(REPLY))
    assert plan.action == "create" and not plan.root
    # The same key the root itself would create: whichever is filed first, both meet there.
    assert plan.record == one(mail(ROOT)).record
    assert any("conversation root <root@x>" in r for r in plan.reasons)


def test_routes_by_alias_with_plus_addressing_set_type_fields_and_acknowledge() -> None:
    plan = one(mail(ROOT.replace("support@", "Billing+urgent@")), Known())
    assert plan.record is not None and plan.record.type == "invoice"
    assert plan.fields == {"Channel": "mail"}
    assert [(n.kind, n.to, n.sent) for n in plan.notices] == [
        ("acknowledge", "alice@example.org", False)
    ]
    assert any("route 'billing': recipient billing+urgent@example.com" in r for r in plan.reasons)
    assert one(mail(ROOT.replace("support@", "billingx@"))).record.type == "case"  # type: ignore[union-attr]


def test_one_mail_to_two_aliases_opens_a_record_of_each_type() -> None:
    message = mail(
        ROOT.replace("To: support@example.com", "To: billing@example.com, sales@example.com")
    )
    plans = decide(message, Known(sender=ALICE), CONFIG, blob="b")
    assert [(p.record.type if p.record else None, p.primary) for p in plans] == [
        ("invoice", True),
        ("case", False),
    ]
    assert plans[1].tags == ("sales",)


def test_routes_by_sender_domain_subject_header_and_attachments() -> None:
    assert one(mail(ROOT.replace("alice@example.org", "x@mx.spam.example"))).action == "drop"
    alert = one(mail(ROOT.replace("Subject: Help", "Subject: [ALERT] disk full")))
    assert alert.action == "drop" and any("ignored" in r for r in alert.reasons)
    scan_headers = ROOT.replace("support@", "scans@") + "\nX-Scanner: ACME 3000"
    plain = one(mail(scan_headers))
    assert plain.record is not None and "route 'scans'" not in " ".join(plain.reasons)
    multipart = scan_headers + "\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b"
    body = (
        "--b\nContent-Type: text/plain\n\nscan\n--b\nContent-Type: application/pdf\n"
        "Content-Disposition: attachment; filename=s.pdf\n\nJVBE\n--b--"
    )
    scanned = one(mail(multipart, body))
    assert any(
        "route 'scans': recipient scans@example.com, header X-Scanner" in r for r in scanned.reasons
    )


# --- sender policy and rate limit ----------------------------------------------------------


def test_unknown_sender_becomes_a_guest() -> None:
    plan = one(mail(ROOT), Known())
    assert [(c.address, c.kind) for c in plan.contacts] == [("alice@example.org", "guest")]
    assert any("created as a guest" in r for r in plan.reasons)
    assert one(mail(ROOT)).contacts == ()  # a known contact acts as themselves


def test_sender_policies_reject_discard_forward_and_allowed_domains() -> None:
    closed = one(mail(ROOT.replace("support@", "closed@")), Known())
    assert closed.action == "reject"
    assert [(n.kind, n.to) for n in closed.notices] == [("reject", "alice@example.org")]
    assert one(mail(ROOT.replace("support@", "quiet@")), Known()).action == "drop"
    fwd = one(mail(ROOT.replace("support@", "fwd@")), Known())
    assert fwd.action == "drop" and [(n.kind, n.to) for n in fwd.notices] == [
        ("forward", "admin@example.com")
    ]
    vip = ROOT.replace("support@", "vip@")
    assert one(mail(vip), Known()).action == "reject"  # example.org is not allowed
    partner = one(mail(vip.replace("alice@example.org", "p@eu.partner.example")), Known())
    assert partner.action == "create" and partner.contacts[0].kind == "guest"


def test_updates_only_from_contacts_where_the_type_says_so() -> None:
    invoice = RecordRef(type="invoice", key="inv1")
    known = Known(thread={"r1@x": invoice})
    rejected = one(mail(REPLY), known)
    assert rejected.action == "reject" and rejected.record == invoice
    assert "takes updates from contacts only" in rejected.reasons[-1]
    contact = Known(thread={"r1@x": invoice}, sender=Contact("bob@example.org", "contact"))
    assert one(mail(REPLY), contact).action == "attach"


def test_updates_only_from_the_thread_where_the_type_says_so() -> None:
    project = RecordRef(type="project", key="p1")
    stranger = one(mail(REPLY), Known(thread={"r1@x": project}, on_thread={project: False}))
    assert stranger.action == "reject"
    assert "takes updates from its thread only" in stranger.reasons[-1]
    member = one(mail(REPLY), Known(thread={"r1@x": project}, on_thread={project: True}))
    assert member.action == "attach"
    # The addresses on the mail travel with the plan, to be kept as the record's thread.
    assert member.participants == ("bob@example.org", "alice@example.org")


def test_a_reply_to_a_closed_record_reopens_it_or_opens_a_new_one() -> None:
    closed = Known(thread={"r1@x": CASE_1}, records={CASE_1: RecordInfo("Help", "closed")})
    reopened = one(mail(REPLY), closed)
    assert (reopened.action, reopened.record, reopened.status) == ("attach", CASE_1, "open")
    assert "reopened as open" in reopened.reasons[-1]
    assert (
        one(
            mail(REPLY),
            Known(thread={"r1@x": CASE_1}, records={CASE_1: RecordInfo("Help", "open")}),
        ).status
        is None
    )
    config = parse_config(
        CONFIG_TEXT.replace("prefix: CASE\n", "prefix: CASE\n    reply_when_closed: new\n")
    )
    fresh = one(mail(REPLY), closed, config)
    assert fresh.action == "create" and fresh.record != CASE_1 and fresh.root
    assert fresh.record == RecordRef(type="case", key=record_key("case", id_key("r2@x")))
    config = parse_config(
        CONFIG_TEXT.replace("prefix: CASE\n", "prefix: CASE\n    reply_when_closed: attach\n")
    )
    assert one(mail(REPLY), closed, config).status is None


def test_rate_limit_applies_to_replies_too() -> None:
    held = one(mail(REPLY), Known(thread={"r1@x": CASE_1}, sender_recent=3))
    assert held.action == "hold" and held.record is None


def test_rate_limit_holds_excess_mail_and_spares_the_allow_list() -> None:
    held = one(mail(ROOT), Known(sender=ALICE, sender_recent=3))
    assert held.action == "hold" and "limit 3): held" in held.reasons[-1]
    assert one(mail(ROOT), Known(sender=ALICE, sender_recent=2)).action == "create"
    trusted = ROOT.replace("alice@example.org", "ops@trusted.example")
    assert one(mail(trusted), Known(sender_recent=50)).action == "create"


# --- finding the record --------------------------------------------------------------------


def test_reply_attaches_to_the_newest_filed_message_of_its_thread() -> None:
    older, newer = RecordRef(type="case", key="old"), RecordRef(type="case", key="new")
    plan = one(mail(REPLY), Known(thread={"root@x": older, "r1@x": newer}))
    assert (plan.action, plan.record) == ("attach", newer)
    assert "In-Reply-To <r1@x> is filed on case new" in plan.reasons
    plan = one(mail(REPLY), Known(thread={"root@x": older}))
    assert plan.record == older and any(r.startswith("References <root@x>") for r in plan.reasons)


def test_outlook_rewritten_subject_token_finds_the_record() -> None:
    subject = "Subject: RE: [EXTERNAL] AW: Printer \uff3bCASE\u20111042\uff3d broken"
    message = mail(ROOT.replace("Subject: Help", subject))
    plan = one(message, Known(tokens={("CASE", 1042): CASE_1}))
    assert (plan.action, plan.record) == ("attach", CASE_1)
    assert "subject token [CASE-1042] is case k1" in plan.reasons
    need = lookups(message, CONFIG, classification=_human())
    assert [str(t) for t in need.tokens] == ["[CASE-1042]"]
    unknown = one(message, Known(sender=ALICE))
    assert unknown.action == "create"
    assert "subject token [CASE-1042] names no filed record" in unknown.reasons


def test_signed_message_id_finds_the_record_and_a_forged_one_is_ignored() -> None:
    case = RecordRef(type="case", key=record_key("case", "x"))
    mid = signed_message_id(case, "n1", KEY, "mailfiler.invalid")
    reply = ROOT.replace("Message-ID: <root@x>", f"Message-ID: <x9@y>\nIn-Reply-To: <{mid}>")
    plan = one(mail(reply))
    assert (plan.action, plan.record) == ("attach", case)
    forged = mid[:-30] + ("0" if mid[-30] != "0" else "1") + mid[-29:]
    plan = one(mail(reply.replace(mid, forged)))
    assert plan.action == "create"
    assert any("bad signature: ignored" in r for r in plan.reasons)
    header = ROOT + f"\nX-Mailfiler-Ref: {signed_ref_header(case, KEY)}"
    assert one(mail(header)).record == case
    other_key = decide(mail(reply), Known(sender=ALICE), CONFIG, blob="b", signing_keys=[b"k2"])
    assert other_key[0].action == "create"  # signed with a key we do not hold: not ours


def test_conversation_id_finds_the_record() -> None:
    message = mail(ROOT, conversation_id="AAQkAGI2")
    plan = one(message, Known(sender=ALICE, conversation=CASE_1))
    assert (plan.action, plan.record) == ("attach", CASE_1)
    assert "conversation AAQkAGI2 is k1" in plan.reasons


def test_subject_guard_refuses_a_header_match_with_another_subject() -> None:
    guarded = RecordRef(type="guarded", key="g1")
    known = Known(
        sender=ALICE,
        thread={"r1@x": guarded},
        records={guarded: RecordInfo(title="Something else")},
    )
    plan = one(mail(REPLY), known)
    assert plan.action == "create"
    assert any("subject guard" in r for r in plan.reasons)
    same = Known(thread={"r1@x": guarded}, records={guarded: RecordInfo(title="Help")})
    assert one(mail(REPLY), same).record == guarded
    # The guard set on a route applies to mail that route matches, whatever the record type.
    to_careful = REPLY.replace("To: alice@example.org", "To: careful@example.com")
    known = Known(sender=ALICE, thread={"r1@x": CASE_1}, records={CASE_1: RecordInfo("Other")})
    assert one(mail(to_careful), known).action == "create"
    assert one(mail(REPLY), known).record == CASE_1


# --- duplicates and moves ------------------------------------------------------------------


def test_known_message_from_the_same_place_is_a_redelivery() -> None:
    filed = FiledMessage(record=CASE_1, mailbox="support", source_id="src-1", folder="INBOX")
    plan = one(mail(ROOT), Known(filed=filed))
    assert (plan.action, plan.record, plan.entry) == ("sighting", CASE_1, None)
    assert "redelivery" in plan.reasons[-1]
    # The first filing's pending-actions row runs them (a crash included): never planned again.
    assert plan.mailbox_actions == ()


def test_a_new_copy_in_the_mailbox_that_filed_it_plans_no_actions() -> None:
    # IMAP gives a mail a new UID when the user moves it back to the inbox; Graph without
    # immutable ids a new id: the after-filing actions must not move it again.
    filed = FiledMessage(record=CASE_1, mailbox="support", source_id="src-0", folder="Done")
    plan = one(mail(ROOT), Known(filed=filed))
    assert plan.action == "sighting" and plan.folder == "INBOX"
    assert "another copy" in plan.reasons[-1]
    assert plan.mailbox_actions == ()


def test_known_message_in_another_folder_is_a_move() -> None:
    filed = FiledMessage(record=CASE_1, mailbox="support", source_id="src-1", folder="INBOX")
    plan = one(mail(ROOT, folder="Archive"), Known(filed=filed))
    assert plan.action == "sighting" and plan.folder == "Archive"
    assert "moved from folder 'INBOX' to 'Archive'" in plan.reasons[-1]
    assert plan.mailbox_actions == ()  # someone moved it: do not move it back


def test_known_message_in_another_mailbox_is_another_sighting() -> None:
    filed = FiledMessage(record=CASE_1, mailbox="support", source_id="src-1", folder="INBOX")
    plan = one(mail(ROOT, mailbox="other"), Known(filed=filed))
    assert plan.action == "sighting" and plan.mailbox == "other"
    assert "already filed from mailbox 'support'" in plan.reasons[-1]
    assert plan.mailbox_actions == ()  # `other` has no after_filing
    # Filed from `other`, seen in `support`: support's own actions (run once, by the row).
    elsewhere = FiledMessage(record=CASE_1, mailbox="other", source_id="src-9", folder="INBOX")
    plan = one(mail(ROOT), Known(filed=elsewhere))
    assert [a.action for a in plan.mailbox_actions] == ["mark_read", "move"]


# --- classes -------------------------------------------------------------------------------


BOUNCE = """From: MAILER-DAEMON@mx.example.org
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce1@mx.example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="r"
"""
BOUNCE_BODY = """--r
Content-Type: text/plain

Delivery failed.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; gone@example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--r
Content-Type: text/rfc822-headers

From: support@example.com
To: gone@example.org
Subject: Re: Help
Message-ID: <sent-1@example.com>

--r--
"""


def test_bounce_of_a_filed_message_attaches_and_marks_the_contact_undeliverable() -> None:
    plan = one(mail(BOUNCE, BOUNCE_BODY), Known(bounce_original=CASE_1))
    assert (plan.kind, plan.action, plan.record) == ("bounce", "attach", CASE_1)
    assert plan.dsn is not None and plan.dsn.status == "5.1.1"
    assert plan.dsn.original_message_id == "sent-1@example.com"
    assert [(c.address, c.kind) for c in plan.contacts] == [("gone@example.org", "undeliverable")]
    assert plan.notices == ()
    unfiled = one(mail(BOUNCE, BOUNCE_BODY), Known())
    assert unfiled.action == "drop" and "which is not filed" in unfiled.reasons[1]


AUTO = (
    "From: bob@example.org\nTo: support@example.com\nSubject: Automatic reply: Help\n"
    "Auto-Submitted: auto-replied\nMessage-ID: <ooo-1@example.org>"
)


def test_auto_reply_to_unknown_mail_is_recorded_not_filed_by_default() -> None:
    # An out-of-office answering mail that is not filed (or no mail at all) opens nothing.
    for headers in (AUTO, AUTO + "\nIn-Reply-To: <unfiled@example.com>"):
        for route in ("support@", "billing@"):
            plan = one(mail(headers.replace("support@", route)), Known())
            assert (plan.kind, plan.action, plan.record) == ("auto_reply", "drop", None)
            assert plan.entry is None and plan.notices == () and plan.contacts == ()
            assert "auto_reply to no filed mail: recorded, not filed" in plan.reasons[-1]
            assert "attach_to_original never opens a record" in plan.reasons[-1]


def test_auto_reply_attaches_to_its_original_by_reference_token_or_conversation() -> None:
    ways = [
        (AUTO + "\nIn-Reply-To: <r1@x>", Known(thread={"r1@x": CASE_1}), "In-Reply-To <r1@x>"),
        (AUTO + "\nReferences: <root@x> <r1@x>", Known(thread={"root@x": CASE_1}), "References"),
        (
            AUTO.replace("Automatic reply: Help", "Automatic reply: Help [CASE-7]"),
            Known(tokens={("CASE", 7): CASE_1}),
            "subject token [CASE-7]",
        ),
    ]
    for headers, known, why in ways:
        plan = one(mail(headers, "Priority: 1\n\nI am away until Monday."), known)
        assert (plan.kind, plan.action, plan.record) == ("auto_reply", "attach", CASE_1), why
        assert any(r.startswith(why) for r in plan.reasons), (why, plan.reasons)
        # An answering machine changes no field and gives no one standing on the record.
        assert plan.fields == {} and plan.participants == () and plan.notices == ()
        assert plan.entry is not None and plan.entry.kind == "auto_reply"
        assert "auto_reply attached to its original: no field changes, no standing" in (
            plan.reasons
        )
    by_conversation = one(mail(AUTO, conversation_id="AAQkAGI2"), Known(conversation=CASE_1))
    assert (by_conversation.action, by_conversation.record) == ("attach", CASE_1)


def test_auto_reply_in_other_scripts_attaches_the_same_way() -> None:
    for subject in ("自動応答: ヘルプ", "Автоматический ответ: Помощь", "رد تلقائي: مساعدة"):
        headers = AUTO.replace("Automatic reply: Help", subject) + "\nIn-Reply-To: <r1@x>"
        plan = one(mail(headers, "في إجازة 🌴"), Known(thread={"r1@x": CASE_1}))
        assert (plan.kind, plan.action, plan.record) == ("auto_reply", "attach", CASE_1), subject


def test_attach_to_original_neither_reopens_nor_opens_a_record_on_a_closed_one() -> None:
    for policy in ("reopen", "new"):
        setting = f"prefix: CASE\n    reply_when_closed: {policy}\n"
        config = parse_config(CONFIG_TEXT.replace("prefix: CASE\n", setting))
        known = Known(thread={"r1@x": CASE_1}, records={CASE_1: RecordInfo("Help", "closed")})
        plan = one(mail(AUTO + "\nIn-Reply-To: <r1@x>"), known, config)
        assert (plan.action, plan.record, plan.status, plan.root) == ("attach", CASE_1, None, False)


def test_attach_to_original_never_opens_a_record_for_any_class() -> None:
    config = parse_config(CONFIG_TEXT + "classes: {bulk: attach_to_original}\n")
    news = ROOT + "\nList-Id: <news.example.org>"
    assert one(mail(news), config=config).action == "drop"
    attached = one(mail(news + "\nIn-Reply-To: <r1@x>"), Known(thread={"r1@x": CASE_1}), config)
    assert (attached.kind, attached.action, attached.record) == ("bulk", "attach", CASE_1)


def test_file_no_answer_still_files_auto_replies_but_never_answers() -> None:
    config = parse_config(CONFIG_TEXT + "classes: {auto_reply: file_no_answer}\n")
    auto = AUTO.replace("support@", "billing@")
    plan = one(mail(auto), Known(), config)
    assert (plan.kind, plan.action) == ("auto_reply", "create")
    assert plan.notices == ()


def test_bulk_and_own_loop_are_dropped_with_their_reason() -> None:
    bulk = one(mail(ROOT + "\nList-Id: <news.example.org>\nPrecedence: bulk"))
    assert (bulk.kind, bulk.action) == ("bulk", "drop")
    assert "classes.bulk: drop" in bulk.reasons[-1]
    loop = one(mail(ROOT + "\nX-Mailfiler-Loop: yes"))
    assert (loop.kind, loop.action) == ("own_loop", "drop")


def test_class_actions_are_configurable() -> None:
    config = parse_config(CONFIG_TEXT + "classes: {bulk: file}\n")
    plan = one(mail(ROOT + "\nList-Id: <news.example.org>"), config=config)
    assert (plan.kind, plan.action) == ("bulk", "create")


# --- direction, fields, reply text ---------------------------------------------------------


def test_our_outbound_mail_files_into_its_conversation_but_opens_none() -> None:
    out = REPLY.replace("From: bob@example.org", "From: Support <support@example.com>")
    plan = one(mail(out, folder="Sent"), Known(thread={"r1@x": CASE_1}))
    assert plan.action == "attach" and plan.entry is not None and plan.entry.direction == "out"
    assert plan.entry.flag is None
    assert "read from the mailbox's sent folder 'Sent': mail we sent (direction out)" in (
        plan.reasons
    )
    new = one(
        mail(ROOT.replace("From: alice@example.org", "From: support@example.com"), folder="sent")
    )
    assert new.action == "drop" and "opens no record" in new.reasons[-1]


def test_key_value_lines_set_allowed_fields_with_types() -> None:
    body = "Priority: 2\nProblemType: billing\nDue: 2026-12-01\nColour: red\n\nPlease help."
    plan = one(mail(ROOT, body))
    assert plan.fields == {"Priority": 2, "ProblemType": "Billing", "Due": "2026-12-01"}
    assert "field 'Colour' is not a field of case" in plan.reasons


def test_bad_field_values_are_reported_not_applied() -> None:
    plan = one(mail(ROOT, "Priority: high\nProblemType: Other\n\nhelp"))
    assert plan.fields == {}
    assert any(r.startswith("field Priority: 'high' is not a valid int") for r in plan.reasons)
    assert any(
        r.startswith("field ProblemType: 'Other' is not a valid choice") for r in plan.reasons
    )


def test_replies_may_change_only_on_update_fields() -> None:
    plan = one(
        mail(REPLY, "Priority: 1\nProblemType: Technical\n\nmore"),
        Known(thread={"r1@x": CASE_1}, on_thread={CASE_1: True}),
    )
    assert plan.fields == {"Priority": 1}
    assert "field ProblemType cannot be changed by a reply" in plan.reasons


def test_fields_in_quoted_text_are_ignored() -> None:
    body = "Thanks!\n\nOn Mon, 1 Jan 2026, Bob wrote:\n> Priority: 1\n"
    assert one(mail(ROOT, body)).fields == {}


def test_timeline_snippet_is_the_reply_text_without_the_quote() -> None:
    body = "Works now, thanks.\n\nOn Mon, 16 Nov 2026 at 09:02, Alice wrote:\n> old text here\n"
    plan = one(mail(REPLY, body), Known(thread={"r1@x": CASE_1}))
    assert plan.entry is not None and plan.entry.snippet == "Works now, thanks."


def _human() -> Classification:
    return Classification(kind="human", reasons=())


# --- our address cannot be borrowed; field changes need standing (issue 16) ----------------

# A phishing mail: From one of our addresses (in Cyrillic script's display name), into the inbox,
# naming a record by a guessed token, with a field change and a link.
SPOOF = (
    "From: =?utf-8?b?0KHQu9GD0LbQsdCwINC/0L7QtNC00LXRgNC20LrQuA==?= <Support@Example.com>\n"
    "To: alice@example.org\nSubject: =?utf-8?b?UmU6INCf0YDQuNC90YLQtdGAIFtDQVNFLTJd?=\n"
    "Message-ID: <spoof@evil.example>"
)
SPOOF_BODY = "Priority: 1\n\nPlease log in at http://evil.example/login"
CASE_2 = RecordRef(type="case", key="k2")


def test_mail_from_our_address_into_the_inbox_is_inbound_and_flagged() -> None:
    message = mail(SPOOF, SPOOF_BODY)
    assert message.subject == "Re: Принтер [CASE-2]"
    # Even on the record's mail (our address is on every mail it files), it has no standing.
    known = Known(tokens={("CASE", 2): CASE_2}, on_thread={CASE_2: True})
    plan = one(message, known)
    assert plan.action == "attach" and plan.record == CASE_2
    assert plan.entry is not None and plan.entry.direction == "in"
    assert plan.entry.flag is not None
    assert "From claims our address support@example.com" in plan.entry.flag
    assert "no Authentication-Results of the mailbox's server" in plan.entry.flag
    assert any(r.startswith("flagged: From claims our address") for r in plan.reasons)
    assert plan.fields == {}
    assert (
        "field changes ignored (Priority): support@example.com has no standing on CASE-2 "
        "(it claims our address from outside)"
    ) in plan.reasons
    assert plan.participants == ()  # its To/Cc gain nothing either
    assert "Служба поддержки" in plan.entry.from_


def test_only_our_servers_authentication_results_vouch_for_our_address() -> None:
    known = Known(tokens={("CASE", 2): CASE_2})
    forged = "Authentication-Results: evil.example; dmarc=pass header.from=example.com\n"
    plan = one(mail(forged + SPOOF, SPOOF_BODY), known)
    assert plan.entry is not None and plan.entry.flag is not None
    failing = "Authentication-Results: mx.example.com; dmarc=fail header.from=example.com\n"
    plan = one(mail(failing + forged.replace("evil.example", "mx.example.com") + SPOOF), known)
    assert plan.entry is not None and plan.entry.flag is not None
    assert "mx.example.com reports no pass for example.com" in plan.entry.flag
    passing = "Authentication-Results: mx.example.com (edge); dkim=pass (ok) header.d=example.com\n"
    plan = one(mail(passing + SPOOF, SPOOF_BODY), known)
    assert plan.entry is not None and plan.entry.flag is None
    assert plan.entry.direction == "in"  # vouched for, still never outbound
    assert "From is our address support@example.com; mx.example.com vouches: " in "".join(
        plan.reasons
    )
    # Another mailbox names no authserv_id: nothing can vouch there.
    plan = one(mail(passing + SPOOF, mailbox="other"), known)
    assert plan.entry is not None and plan.entry.flag is not None
    assert "mailbox 'other' names no authserv_id" in plan.entry.flag


def test_a_flagged_sender_gets_no_notice_no_guest_row_and_no_thread_membership() -> None:
    # A new conversation through a route that acknowledges: filed, flagged, nothing sent.
    to_billing = SPOOF.replace("alice@example.org", "billing@example.com").replace(
        "=?utf-8?b?UmU6INCf0YDQuNC90YLQtdGAIFtDQVNFLTJd?=", "Invoice"
    )
    plan = one(mail(to_billing), Known())
    assert plan.action == "create" and plan.notices == () and plan.contacts == ()
    assert plan.entry is not None and plan.entry.flag is not None
    # A type that takes updates from its thread only: refused, and no notice to "ourselves".
    project = RecordRef(type="project", key="p1")
    known = Known(tokens={("CASE", 2): project}, on_thread={project: True})
    refused = one(mail(SPOOF), known)
    assert refused.action == "reject" and refused.notices == ()
    assert "claims our address from outside" in refused.reasons[-1]


def test_own_loop_signs_only_stop_mail_and_say_it_is_flagged() -> None:
    loop = one(mail(SPOOF + "\nX-Mailfiler-Loop: yes"), Known(tokens={("CASE", 2): CASE_2}))
    assert (loop.kind, loop.action) == ("own_loop", "drop")
    assert any(r.startswith("flagged: From claims our address") for r in loop.reasons)


def test_field_changes_by_mail_need_standing_on_the_record() -> None:
    stranger = "From: Eve <eve@example.net>\nTo: support@example.com\nSubject: Re: Help [CASE-2]"
    body = "Priority: 1\n\nplease hurry"
    tokens = {("CASE", 2): CASE_2}
    # updates_from: anyone still attaches the stranger's reply; its field change is refused.
    plan = one(mail(stranger, body), Known(tokens=tokens, on_thread={CASE_2: False}))
    assert plan.action == "attach" and plan.record == CASE_2 and plan.fields == {}
    assert (
        "field changes ignored (Priority): eve@example.net has no standing on CASE-2 "
        "(not on the record's mail, not a known contact)"
    ) in plan.reasons
    assert plan.participants == ()  # writing to a record gives no standing on it
    # A participant of the record's mail may change it.
    member = one(mail(stranger, body), Known(tokens=tokens, on_thread={CASE_2: True}))
    assert member.fields == {"Priority": 1}
    assert member.participants == ("eve@example.net", "support@example.com")
    # So may a known contact, on or off the thread; a disallowed one may not.
    contact = Contact("eve@example.net", "contact")
    assert one(mail(stranger, body), Known(tokens=tokens, sender=contact)).fields == {"Priority": 1}
    blocked = Contact("eve@example.net", "contact", allowed=False)
    assert one(mail(stranger, body), Known(tokens=tokens, sender=blocked)).fields == {}
    guest = Contact("eve@example.net", "guest")
    assert one(mail(stranger, body), Known(tokens=tokens, sender=guest)).fields == {}
    # A mail without field lines says nothing about standing.
    quiet = one(mail(stranger, "thanks"), Known(tokens=tokens))
    assert not any("field changes ignored" in r for r in quiet.reasons)
    # Creating a record still sets fields (route and allow-list rules), from anyone.
    assert one(mail(ROOT, body), Known()).fields == {"Priority": 1}


def test_participants_of_one_mail_are_bounded() -> None:
    crowd = ", ".join(f"p{i}@example.org" for i in range(150))
    plan = one(mail(ROOT + f"\nCc: {crowd}"))
    assert plan.action == "create" and len(plan.participants) == 50
    assert plan.participants[:2] == ("alice@example.org", "support@example.com")
