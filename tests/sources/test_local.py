"""The local mailbox kinds: a folder of .eml files, a Maildir and an mbox."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from shared.core.contracts import MailboxAction
from shared.sources.local import LocalSource, LocalSourceError

MAIL = b"From: a@example.com\nSubject: %d\nMessage-ID: <%d@example.com>\n\nbody %d\n"


def test_eml_folder_lists_recursively_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.eml").write_bytes(MAIL % (1, 1, 1))
    (tmp_path / "sub" / "a.eml").write_bytes(MAIL % (2, 2, 2))
    (tmp_path / "notes.txt").write_text("not mail")
    source = LocalSource(tmp_path)
    assert source.kind == "eml-folder"
    assert list(source.refs()) == [str(tmp_path / "b.eml"), str(tmp_path / "sub" / "a.eml")]
    message = source.read(str(tmp_path / "sub" / "a.eml"))
    assert message.raw == MAIL % (2, 2, 2)
    assert message.received_at is not None and message.received_at.tzinfo is not None


def test_a_subfolder_is_the_mails_folder(tmp_path: Path) -> None:
    # An export that kept its folders: `sent_folders: [Sent]` then applies to Sent/*.eml.
    for folder in ("", "Sent", "Archiv/2025 Ärger"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "m.eml").write_bytes(MAIL % (1, 1, 1))
    source = LocalSource(tmp_path)
    folders = {ref: source.read(ref).folder for ref in source.refs()}
    assert folders == {
        str(tmp_path / "m.eml"): None,
        str(tmp_path / "Sent" / "m.eml"): "Sent",
        str(tmp_path / "Archiv" / "2025 Ärger" / "m.eml"): "Archiv/2025 Ärger",
    }
    assert (
        LocalSource(tmp_path / "Sent" / "m.eml").read(str(tmp_path / "Sent" / "m.eml")).folder
        is None
    )


def test_single_eml_file(tmp_path: Path) -> None:
    file = tmp_path / "one.eml"
    file.write_bytes(MAIL % (1, 1, 1))
    source = LocalSource(file)
    assert (source.kind, list(source.refs())) == ("eml", [str(file)])
    assert source.read(str(file)).raw == MAIL % (1, 1, 1)


def test_maildir_ids_survive_flag_changes_and_flags_are_read(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "md", create=True)
    key = box.add(mailbox.MaildirMessage(MAIL % (1, 1, 1)))
    msg = box[key]
    msg.set_subdir("cur")
    msg.set_flags("SF")
    box[key] = msg
    source = LocalSource(tmp_path / "md")
    assert source.kind == "maildir"
    assert list(source.refs()) == [f"{tmp_path / 'md'}/{key}"]
    read = source.read(f"{tmp_path / 'md'}/{key}")
    assert set(read.flags) == {"\\Seen", "\\Flagged"}
    assert b"Message-ID: <1@example.com>" in read.raw


def test_maildir_mail_renamed_after_listing_is_still_read(tmp_path: Path) -> None:
    # The folder is listed once for every read: a flag change or a move from new/ to cur/
    # between the listing and a read must not lose the message, and mail added later is found.
    box = mailbox.Maildir(tmp_path / "md", create=True)
    first = box.add(mailbox.MaildirMessage(MAIL % (1, 1, 1)))
    source = LocalSource(tmp_path / "md")
    assert source.read(f"{tmp_path / 'md'}/{first}").flags == ()
    msg = box[first]
    msg.set_subdir("cur")
    msg.set_flags("S")
    box[first] = msg
    second = box.add(mailbox.MaildirMessage(MAIL % (2, 2, 2)))
    assert source.read(f"{tmp_path / 'md'}/{first}").flags == ("\\Seen",)
    assert b"<2@example.com>" in source.read(f"{tmp_path / 'md'}/{second}").raw
    box.remove(second)
    with pytest.raises(LocalSourceError, match="no Maildir message"):
        source.read(f"{tmp_path / 'md'}/{second}")


def test_mbox_messages_are_keyed_by_content(tmp_path: Path) -> None:
    path = tmp_path / "export.mbox"
    box = mailbox.mbox(path)
    for i in range(3):
        box.add(MAIL % (i, i, i))
    box.add(MAIL % (0, 0, 0))  # an exact duplicate is one message
    box.close()
    source = LocalSource(path)
    assert source.kind == "mbox"
    refs = list(source.refs())
    assert len(refs) == 3 and all(r.startswith(f"{path}#sha256:") for r in refs)
    assert b"body 2" in source.read(refs[2]).raw
    with pytest.raises(LocalSourceError):
        source.read(f"{path}#sha256:unknown")


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalSourceError, match="no such file or folder"):
        LocalSource(tmp_path / "nope")


def test_actions_are_recorded_not_performed_on_local_files(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(MAIL % (1, 1, 1))
    source = LocalSource(tmp_path)
    results = source.apply(str(tmp_path / "a.eml"), [MailboxAction(action="mark_read")])
    assert [(r.done, r.action.action) for r in results] == [(False, "mark_read")]
    assert (tmp_path / "a.eml").read_bytes() == MAIL % (1, 1, 1)


def test_ids_outside_the_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "secret.eml").write_bytes(MAIL % (1, 1, 1))
    with pytest.raises(LocalSourceError, match="is not inside"):
        LocalSource(tmp_path / "in").read(str(tmp_path / "secret.eml"))


def test_two_exports_with_the_same_file_names_do_not_hide_each_other(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "1.eml").write_bytes(MAIL % (1, 1, 1))
    assert set(LocalSource(tmp_path / "a").refs()).isdisjoint(LocalSource(tmp_path / "b").refs())
