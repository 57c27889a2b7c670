"""`mailfiler config check`: one pass finds every problem, each said in our words at its place
and line; what only a run can tell is said as notes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.cli.azurite import REPO

MAILFILER = [sys.executable, "-m", "shared.cli"]

# The file of issue 21: four rounds of `config check` before, and four mistakes that passed.
BROKEN = """\
version: 1
record_types:
  - name: case
    prefix: CASE
    title: Обращение в поддержку
    fields:
      - {name: Priority, type: int}
  - name: ticket
    prefix: CASE
  - name: billing
    prefix: Bill-1
mailboxes:
  - name: support
    kind: imap
    host: imap.example.com
    username: support
    password_setting: IMAP_SUPPORT_PASSWORD
    folders: INBOX
    record_type: case
  - name: archive
    kind: local
    path: old-mail
    record_type: case
routes:
  - name: billing
    to: billing@example.com
    record_type: billing
  - name: russian
    to: не-адрес
    record_type: case
  - name: urgent
    subject: urgent
    record_type: case
    fields:
      Priority: high
      Owner: Алиса
ratelimit:
  per_sender: 5
"""


def check(path: Path, *options: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [*MAILFILER, "config", "check", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        cwd=path.parent,
    )


def test_one_pass_reports_every_problem_in_our_words(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    result = check(tmp_path / "broken.yaml")
    assert result.returncode == 1
    assert result.stdout == ""
    f = tmp_path / "broken.yaml"
    assert result.stderr.splitlines() == [
        f"{f}:9: record_types.ticket.prefix: prefix 'CASE' is taken by record type 'case': "
        "each record type needs its own, so that a display id such as CASE-12 says which type "
        "it is",
        f"{f}:11: record_types.billing.prefix: 'Bill-1' is not allowed: a prefix is 1 to 10 "
        "capital letters A-Z and digits, starting with a letter, e.g. CASE",
        f"{f}:18: mailboxes.support.folders: a list of folder names, e.g. [INBOX]",
        f"{f}:22: mailboxes.archive.path: 'old-mail' does not exist (looked for "
        f"{tmp_path / 'old-mail'}); give a folder of .eml files, a Maildir or an mbox file, "
        "relative to this file",
        f"{f}:29: routes[1].to: 'не-адрес' is not an email address: write the whole address, "
        "e.g. billing@example.com (billing+anything@example.com matches it too)",
        f"{f}:35: routes[2].fields.Priority: Priority is an int field: 'high' is not a whole "
        "number",
        f"{f}:36: routes[2].fields.Owner: record type 'case' has no field 'Owner' (its fields: "
        "Priority; declare it under the record type's fields)",
        f"{f}:37: unknown key 'ratelimit' (did you mean 'rate_limit'?)",
        f"{f}: 8 errors; fix them and run the check again",
    ]


def test_json_lists_errors_with_place_and_line(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    result = check(tmp_path / "broken.yaml", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [(e["place"], e["line"]) for e in report["errors"]] == [
        ("record_types.ticket.prefix", 9),
        ("record_types.billing.prefix", 11),
        ("mailboxes.support.folders", 18),
        ("mailboxes.archive.path", 22),
        ("routes[1].to", 29),
        ("routes[2].fields.Priority", 35),
        ("routes[2].fields.Owner", 36),
        ("", 37),
    ]
    assert report["errors"][4]["message"].startswith("'не-адрес' is not an email address")


def test_references_are_checked_even_when_parts_fail(tmp_path: Path) -> None:
    # The mailbox has a problem of its own; its unknown record type is reported beside it.
    (tmp_path / "mail").mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        "  - {name: support, kind: local, path: mail, record_type: cse, mark_read: yes}\n"
        "routes:\n"
        "  - {name: r, mailbox: suport, record_type: case, actoin: file}\n",
        encoding="utf-8",
    )
    result = check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[:4] == [
        f"{path}:3: mailboxes.support: unknown key 'mark_read'",
        f"{path}:3: mailboxes.support.record_type: unknown record type 'cse' (did you mean "
        "'case'? known: case)",
        f"{path}:5: routes[0]: unknown key 'actoin' (did you mean 'action'?)",
        f"{path}:5: routes[0].mailbox: unknown mailbox 'suport' (did you mean 'support'? "
        "known: support)",
    ]


def test_a_tab_is_named_as_a_tab(tmp_path: Path) -> None:
    path = tmp_path / "tab.yaml"
    path.write_text("record_types:\n  - name: case\n\tprefix: CASE\n", encoding="utf-8")
    result = check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"{path}:3: a tab at column 1: YAML indents with spaces only; replace the tab with spaces"
    )


def test_values_in_our_words(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "record_types:\n"
        "  - {name: case, prefix: CASE, updates_from: contact}\n"
        "mailboxes:\n"
        "  - {name: support, kind: imap, host: h, username: u, password_setting: 1PASS,\n"
        "     poll_minutes: often, since: yesterday, record_type: case}\n"
        "  - {name: 日本, kind: pop3, path: mail}\n",
        encoding="utf-8",
    )
    result = check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[:-1] == [
        f"{path}:2: record_types.case.updates_from: 'contact' is not one of: anyone, thread, "
        "contacts (did you mean 'contacts'?)",
        f"{path}:4: mailboxes.support.password_setting: '1PASS' is not allowed: an app "
        "setting's name is letters, digits and '_', not starting with a digit, "
        "e.g. IMAP_SUPPORT_PASSWORD",
        f"{path}:5: mailboxes.support.since: a date as YYYY-MM-DD, not 'yesterday'",
        f"{path}:5: mailboxes.support.poll_minutes: a whole number, not 'often'",
        f"{path}:6: mailboxes[1]: kind 'pop3' is not one of: local, imap, graph, ews",
    ]


def test_a_good_file_says_what_only_a_run_can_tell(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(
        "record_types: [{name: case, prefix: CASE, title: 案件}]\n"
        "mailboxes:\n"
        "  - {name: support, kind: imap, host: imap.example.com, username: support,"
        " password_setting: MF_TEST_SET, record_type: case}\n",
        encoding="utf-8",
    )
    result = check(path, MF_TEST_SET="x")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{path}: OK: 1 mailbox(es), 1 record type(s), 0 route(s)",
        f"{path}: note: mailboxes.support: whether imap.example.com:993 answers and support "
        "can sign in with MF_TEST_SET shows at the first poll (`mailfiler status`)",
    ]
