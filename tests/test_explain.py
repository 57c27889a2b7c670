"""`mailfiler explain`: JSON Lines with stable keys, in-call threading, thousands of files."""

from __future__ import annotations

import io
import json
import mailbox
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.cli.azurite import REPO
from shared.cli.explain import Simulation, run_explain
from shared.core.contracts import RecordRef
from shared.core.record_names import name_records
from shared.settings import load_config

KEYS = {
    "file",
    "message_id",
    "subject",
    "normalized_subject",
    "from",
    "to",
    "cc",
    "date",
    "attachments",
    "text",
    "reply_text",
    "classification",
    "fields",
    "decision",
}
CORPORA = REPO / "tests" / "data" / "corpora"


def explain(
    paths: list[str], config: Path = REPO / "samples" / "mailfiler.yaml"
) -> list[dict[str, Any]]:
    out = io.StringIO()
    assert run_explain(paths, "sample", load_config(config), True, out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_sample_mail_explained_with_stable_keys_and_threading() -> None:
    results = explain([str(REPO / "samples" / "mail")])
    assert len(results) == 8
    assert all(set(r) == KEYS for r in results)
    decisions = [(r["decision"]["action"], r["decision"]["record"]) for r in results]
    # The inbox first, then Sent; Alice's thanks waits for support's reply it answers.
    assert decisions == [
        ("create", "CASE-1"),
        ("create", "CASE-2"),
        ("create", "CASE-3"),
        ("create", "CASE-4"),
        ("attach", "CASE-1"),
        ("attach", "CASE-1"),
        ("attach", "CASE-2"),
        ("attach", "CASE-3"),
    ]
    files = [Path(r["file"]).relative_to(REPO / "samples" / "mail").as_posix() for r in results]
    assert files[4:6] == ["Sent/02-printer-reply-support.eml", "03-printer-reply-alice.eml"]
    # Support's replies were read from the Sent folder the sample declares: ours, outbound.
    sent = [r for r in results if r["file"].split("/")[-2] == "Sent"]
    assert len(sent) == 3
    assert all(
        "read from the mailbox's sent folder 'Sent': mail we sent (direction out)"
        in r["decision"]["reasons"]
        for r in sent
    )
    # Records are named by number in the reasons, as people name them.
    assert (
        "In-Reply-To <printer-1@contoso.example> is filed on CASE-1"
        in results[4]["decision"]["reasons"]
    )
    invoice = results[1]
    assert invoice["fields"] == {"ProblemType": "Billing"}
    assert invoice["attachments"] == [
        {"filename": "invoice-2291.pdf", "content_type": "application/pdf", "size": 78}
    ]
    assert invoice["date"] == "2026-11-17T14:20:00-05:00"
    assert results[4]["reply_text"] == "Hi Alice, a technician is on the way."
    assert results[4]["normalized_subject"] == "Printer on floor 3 is jammed"
    assert results[0]["classification"] == {"kind": "human", "reasons": []}


def test_bounces_carry_their_dsn() -> None:
    results = explain([str(CORPORA / "bounces" / "flanker" / "office365.eml")])
    (result,) = results
    assert result["classification"]["kind"] == "bounce"
    assert result["classification"]["dsn"]["status"] == "5.1.10"
    assert result["decision"]["action"] == "drop"  # its original was never filed


def test_an_mbox_and_a_duplicate_in_one_call(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "export.mbox")
    for name in ("01-printer-jammed.eml", "Sent/02-printer-reply-support.eml"):
        box.add((REPO / "samples" / "mail" / name).read_bytes())
    box.close()
    results = explain(
        [str(tmp_path / "export.mbox"), str(REPO / "samples" / "mail" / "01-printer-jammed.eml")]
    )
    assert [r["decision"]["action"] for r in results] == ["create", "attach", "sighting"]
    assert results[0]["file"].startswith(f"{tmp_path / 'export.mbox'}#sha256:")


def test_thousands_of_files_in_one_call(tmp_path: Path) -> None:
    for i in range(2000):
        refs = f"In-Reply-To: <m{i - 1}@x>\n" if i % 2 else ""
        (tmp_path / f"{i:05d}.eml").write_text(
            f"From: u{i // 2}@example.org\nTo: support@mailfiler.example\nSubject: T {i // 2}\n"
            f"Message-ID: <m{i}@x>\n{refs}\nhello {i}\n"
        )
    results = explain([str(tmp_path)])
    assert len(results) == 2000
    actions = [r["decision"]["action"] for r in results]
    assert actions.count("create") == actions.count("attach") == 1000


def test_command_line_json_and_errors(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "shared.cli", "explain"]
    ok = subprocess.run(
        [*cmd, str(REPO / "samples" / "mail" / "08-no-message-id.eml"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    (line,) = ok.stdout.splitlines()
    assert json.loads(line)["message_id"] is None
    human = subprocess.run(
        [*cmd, str(REPO / "samples" / "mail")], capture_output=True, text=True, env=env, timeout=60
    )
    assert "human: attach CASE-1" in human.stdout
    missing = subprocess.run(
        [*cmd, str(tmp_path / "nope")], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 1 and "no such file or folder" in missing.stderr
    bad_box = subprocess.run(
        [*cmd, str(tmp_path), "--mailbox", "zz"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad_box.returncode == 1 and "mailbox 'zz' is not in" in bad_box.stderr


def test_a_borrowed_own_address_is_flagged_and_field_changes_need_standing(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mailfiler.yaml"
    config.write_text(
        "record_types:\n"
        "  - {name: case, prefix: CASE, fields: [{name: Priority, type: int, on_update: true}]}\n"
        "mailboxes:\n"
        "  - {name: sample, kind: local, path: mail, record_type: case,\n"
        "     addresses: [support@mailfiler.example]}\n"
    )
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "1.eml").write_text(
        "From: alice@example.org\nTo: support@mailfiler.example\nSubject: Принтер\n"
        "Message-ID: <p1@example.org>\n\nPriority: 3\n\nIt jams.\n"
    )
    (mail / "2.eml").write_text(
        "From: Служба <support@mailfiler.example>\nTo: alice@example.org\n"
        "Subject: Re: Принтер [CASE-1]\nMessage-ID: <p2@evil.example>\n\n"
        "Priority: 1\n\nLog in at http://evil.example\n"
    )
    (mail / "3.eml").write_text(
        "From: alice@example.org\nTo: support@mailfiler.example\nSubject: Re: Принтер [CASE-1]\n"
        "Message-ID: <p3@example.org>\n\nPriority: 2\n\nStill jams.\n"
    )
    first, spoof, reply = explain([str(mail)], config)
    assert first["fields"] == {"Priority": 3} and first["decision"]["flag"] is None
    assert spoof["decision"]["action"] == "attach" and spoof["fields"] == {}
    assert spoof["decision"]["flag"].startswith("From claims our address support@")
    assert any("has no standing on CASE-1" in r for r in spoof["decision"]["reasons"])
    assert reply["fields"] == {"Priority": 2}  # Alice is on the record's mail
    out = io.StringIO()
    run_explain([str(mail / "2.eml")], "sample", load_config(config), False, out)
    assert "FLAGGED: From claims our address support@mailfiler.example" in out.getvalue()


KEYS_HEX = ["0" * 32, "a1" * 16, "f" * 32]


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.builds(
                "{} {}".format,
                st.sampled_from(["case", "task", "xcase", "Case", "case-x"]),
                st.sampled_from(KEYS_HEX),
            ),
            st.sampled_from(["case", " ", "filed on ", ", ", "(", "case  "]),
            st.text(max_size=8),
        ),
        max_size=8,
    ),
    st.lists(st.tuples(st.sampled_from(["case", "task"]), st.sampled_from(KEYS_HEX)), max_size=3),
)
def test_reasons_name_records_as_name_records_does(
    pieces: list[str], numbered: list[tuple[str, str]]
) -> None:
    # `Simulation.named` skips the scan when no numbered type is in the text: same answer.
    sim = Simulation()
    for i, (record_type, key) in enumerate(numbered):
        sim.numbers[RecordRef(type=record_type, key=key)] = f"{record_type.upper()}-{i + 1}"
        sim.numbered_types.add(record_type)
    text = "".join(pieces)
    assert sim.named(text) == name_records(text, sim.numbers.get)
