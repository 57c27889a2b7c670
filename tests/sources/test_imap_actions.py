"""IMAP after-filing actions at the source, against a real Dovecot: a folder created once under a
race, retries after dropped connections that never act twice, a user's move never reverted,
servers asking for quiet ([UNAVAILABLE], [LIMIT], Microsoft 365's suggested back-off) heard as
`SourceBusy`, and the commands a filed mail costs. A cutting proxy sits in front of Dovecot where
the network must fail or another client must act at a precise moment."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient

from shared.core.config import ImapMailbox, parse_config
from shared.core.contracts import MailboxAction
from shared.sources.base import SourceBusy, SourceUnavailable
from shared.sources.imap.source import ImapSource, source_id
from shared.store.stores import Stores
from tests.fakes.cutting_proxy import CuttingProxy, imap_reply
from tests.fakes.dovecot import Dovecot, require_dovecot

pytestmark = pytest.mark.azurite
USER, PASSWORD = "support@example.test", "imap-password"
TARGET = "Erledigt/Geprüft"  # UTF-7 on the wire; Dovecot nests with "."
WIRE = "Erledigt.Geprüft"
THROTTLED = "BAD Request is throttled. Suggested Backoff Time: 93542 milliseconds"  # Microsoft 365
FILE = [
    MailboxAction(action="mark_read"),
    MailboxAction(action="categorize", category="Mailfiler"),
    MailboxAction(action="move", folder=TARGET),
]


def mail(n: int) -> bytes:
    return (
        f"From: kunde{n}@example.org\r\nTo: {USER}\r\nSubject: Frage {n}\r\n"
        f"Message-ID: <imap-act-{n}@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        f"\r\nΓεια σας {n}.\r\n"
    ).encode()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    require_dovecot()
    with Dovecot(users={USER: PASSWORD}) as server:
        yield server


def client(dovecot: Dovecot) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
    c.login(USER, PASSWORD)
    return c


def deliver(dovecot: Dovecot, count: int) -> list[str]:
    """Messages in INBOX; their source ids."""
    with client(dovecot) as c:
        for n in range(count):
            c.append("INBOX", mail(n))
        validity = int(c.select_folder("INBOX")[b"UIDVALIDITY"])
        return [source_id(validity, uid, "INBOX") for uid in sorted(c.search(["ALL"]))]


def source(port: int) -> ImapSource:
    """A new source, as each action of a worker makes one."""
    config = parse_config(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        "  - name: imap\n"
        "    kind: imap\n"
        "    host: 127.0.0.1\n"
        f"    port: {port}\n"
        "    tls: none\n"
        f"    username: {USER}\n"
        "    password_setting: IMAP_ACTIONS_PASSWORD\n"
        "    record_type: case\n"
    )
    mailbox = config.mailbox("imap")
    assert isinstance(mailbox, ImapMailbox)
    return ImapSource(mailbox, PASSWORD)


def folder_state(dovecot: Dovecot, folder: str) -> list[tuple[str, bool]]:
    """(Subject, seen) of each message in a folder; [] when the folder does not exist."""
    with client(dovecot) as c:
        if not c.folder_exists(folder):
            return []
        c.select_folder(folder, readonly=True)
        found = c.fetch(c.search(["ALL"]), [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        return sorted(
            (
                data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip(),
                b"\\Seen" in data[b"FLAGS"],
            )
            for data in found.values()
        )


def test_two_filings_racing_to_create_the_folder_both_move_into_it(
    dovecot: Dovecot, stores: Stores
) -> None:
    first, second = deliver(dovecot, 2)
    with CuttingProxy(dovecot.port) as proxy:
        # Our MOVE answers [TRYCREATE]; another worker creates the folder just before our
        # CREATE reaches Dovecot, which answers NO [ALREADYEXISTS]: success, and the move goes on.
        def other_worker() -> None:
            with client(dovecot) as c:
                c.create_folder(WIRE)

        proxy.before(b" CREATE ", other_worker)
        results = source(proxy.port).apply(first, FILE)
        assert [r.done for r in results] == [True, True, True]
        assert len(proxy.matched) == 1  # our CREATE was sent, after theirs
        assert all(r.done for r in source(proxy.port).apply(second, FILE))
    assert folder_state(dovecot, WIRE) == [("Frage 0", True), ("Frage 1", True)]
    assert folder_state(dovecot, "INBOX") == []


def test_filings_in_threads_all_move_into_one_new_folder(dovecot: Dovecot, stores: Stores) -> None:
    ids = deliver(dovecot, 6)
    barrier = threading.Barrier(len(ids))
    errors: list[BaseException] = []

    def file(item: str) -> None:
        try:
            barrier.wait()
            assert all(r.done for r in source(dovecot.port).apply(item, FILE))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=file, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(folder_state(dovecot, WIRE)) == 6 and folder_state(dovecot, "INBOX") == []
    with client(dovecot) as c:
        names = [name for _, _, name in c.list_folders()]
    assert names.count(WIRE) == 1


def test_a_filed_mail_costs_six_commands_and_no_folder_lookups(
    dovecot: Dovecot, stores: Stores
) -> None:
    ids = deliver(dovecot, 3)
    source(dovecot.port).apply(ids[0], FILE)  # creates the folder
    for item in ids[1:]:
        src = source(dovecot.port)
        assert all(r.done for r in src.apply(item, FILE))
        # LOGIN, SELECT, FETCH (flags), one STORE (\Seen and keyword), MOVE, LOGOUT
        assert src.commands == 6
    with client(dovecot) as c:
        c.select_folder(WIRE, readonly=True)
        flags = c.get_flags(c.search(["ALL"]))
    assert all({b"\\Seen", b"Mailfiler"} <= set(f) for f in flags.values()) and len(flags) == 3


def test_a_user_s_move_back_is_never_reverted(dovecot: Dovecot, stores: Stores) -> None:
    (item,) = deliver(dovecot, 1)
    assert all(r.done for r in source(dovecot.port).apply(item, FILE))
    with client(dovecot) as c:  # the user puts it back in the inbox, unread
        c.select_folder(WIRE)
        c.move(c.search(["ALL"]), "INBOX")
        c.select_folder("INBOX")
        c.remove_flags(c.search(["ALL"]), [b"\\Seen"])
    for _ in range(3):  # duplicate deliveries of the same work, retries
        results = source(dovecot.port).apply(item, FILE)
        assert not any(r.done for r in results)
        assert "left where it is" in results[0].detail
    assert folder_state(dovecot, "INBOX") == [("Frage 0", False)]
    assert folder_state(dovecot, WIRE) == []


def test_a_lost_answer_to_move_is_retried_without_a_second_move(
    dovecot: Dovecot, stores: Stores
) -> None:
    (item,) = deliver(dovecot, 1)
    with client(dovecot) as c:
        c.create_folder(WIRE)
    with CuttingProxy(dovecot.port) as proxy:
        proxy.cut(b" MOVE ", deliver=True)  # Dovecot moves it; the answer is lost
        with pytest.raises(SourceUnavailable):
            source(proxy.port).apply(item, FILE)
        assert len(proxy.matched) == 1
        results = source(proxy.port).apply(item, FILE)
    assert not any(r.done for r in results)
    assert folder_state(dovecot, WIRE) == [("Frage 0", True)]
    assert folder_state(dovecot, "INBOX") == []


def test_a_command_lost_on_the_way_is_retried_and_done_once(
    dovecot: Dovecot, stores: Stores
) -> None:
    (item,) = deliver(dovecot, 1)
    with CuttingProxy(dovecot.port) as proxy:
        proxy.cut(b" STORE ", deliver=False)
        with pytest.raises(SourceUnavailable):
            source(proxy.port).apply(item, FILE)
        assert folder_state(dovecot, "INBOX") == [("Frage 0", False)]
        assert all(r.done for r in source(proxy.port).apply(item, FILE))
    assert folder_state(dovecot, WIRE) == [("Frage 0", True)]


@pytest.mark.parametrize(
    ("command", "answer", "delay"),
    [
        (b" SELECT ", "NO [UNAVAILABLE] Mailbox is temporarily unavailable", 60.0),
        (b" LOGIN ", "NO [UNAVAILABLE] Temporary authentication failure", 60.0),
        (b" MOVE ", "NO [LIMIT] Too many commands", 120.0),
        (b" STORE ", THROTTLED, 93.542),
    ],
    ids=["unavailable-select", "unavailable-login", "limit", "microsoft-365"],
)
def test_a_server_asking_for_quiet_is_busy_and_the_retry_acts_once(
    dovecot: Dovecot, stores: Stores, command: bytes, answer: str, delay: float
) -> None:
    (item,) = deliver(dovecot, 1)
    with CuttingProxy(dovecot.port) as proxy:
        proxy.answer(command, imap_reply(answer))
        with pytest.raises(SourceBusy) as caught:
            source(proxy.port).apply(item, FILE)
        assert caught.value.retry_after == delay
        assert all(r.done for r in source(proxy.port).apply(item, FILE))
    assert folder_state(dovecot, WIRE) == [("Frage 0", True)]


def test_a_busy_poll_raises_source_busy(dovecot: Dovecot, stores: Stores) -> None:
    deliver(dovecot, 2)
    with CuttingProxy(dovecot.port) as proxy:
        proxy.answer(b" STATUS ", imap_reply("NO [UNAVAILABLE] Try again later"))
        with pytest.raises(SourceBusy) as caught:
            source(proxy.port).poll({})
        assert caught.value.retry_after == 60.0
        assert len(source(proxy.port).poll({}).refs) == 2


def test_a_wrong_password_is_neither_busy_nor_transient(dovecot: Dovecot, stores: Stores) -> None:
    (item,) = deliver(dovecot, 1)
    src = source(dovecot.port)
    src.secret = "wrong"
    with pytest.raises(OSError) as caught:
        src.apply(item, FILE)
    assert not isinstance(caught.value, SourceUnavailable)
    assert "wrong" not in str(caught.value)


@pytest.fixture
def dovecot_without_move() -> Iterator[Dovecot]:
    require_dovecot()
    capability = "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS"
    with Dovecot(capability=capability, users={USER: PASSWORD}) as server:
        yield server


@pytest.mark.parametrize("lost", [b" COPY ", b"FLAGS.SILENT (\\Deleted)", b" EXPUNGE"])
def test_without_move_a_lost_answer_never_makes_a_second_copy(
    dovecot_without_move: Dovecot, stores: Stores, lost: bytes
) -> None:
    dovecot = dovecot_without_move
    (item,) = deliver(dovecot, 1)
    with client(dovecot) as c:  # so the first COPY lands (else it answers [TRYCREATE])
        c.create_folder(WIRE)
    with CuttingProxy(dovecot.port) as proxy:
        proxy.cut(lost, deliver=True)  # Dovecot does it; the answer is lost
        with pytest.raises(SourceUnavailable):
            source(proxy.port).apply(item, FILE)
        assert len(proxy.matched) == 1
        source(proxy.port).apply(item, FILE)
    assert folder_state(dovecot, WIRE) == [("Frage 0", True)]
    assert folder_state(dovecot, "INBOX") == []
