"""`mailfiler records list|show|status|reply|file-on` end to end: Azurite, the sample mail and a
mail in Cyrillic filed by `import --process`, a real SMTP sink on loopback for the reply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from shared.cli.azurite import REPO, Azurite, free_port
from shared.store.stores import Stores

from .test_outbound import Sink

pytestmark = pytest.mark.azurite

CYRILLIC = """\
From: =?utf-8?b?0K7Qu9C40Y8g0J/QtdGC0YDQvtCy0LA=?= <julia@example.ru>
To: intake@case.example
Subject: =?utf-8?b?0KHRh9GR0YIg4oSWNDIg0L3QtSDQvtC/0LvQsNGH0LXQvQ==?=
Message-ID: <schet-42@example.ru>
Date: Mon, 07 Dec 2026 09:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Здравствуйте, счёт №42 до сих пор не оплачен.

--b1
Content-Type: application/pdf; name="schet-42.pdf"
Content-Disposition: attachment; filename="schet-42.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK

--b1--
"""


@pytest.fixture
def sink() -> Iterator[Sink]:
    found = Sink(free_port())
    controller = Controller(found, hostname="127.0.0.1", port=found.port)
    controller.start()
    yield found
    controller.stop()


def test_records_from_the_command_line(
    stores: Stores, azurite: Azurite, sample_dir: Path, tmp_path: Path, sink: Sink
) -> None:
    intake = tmp_path / "intake"
    intake.mkdir()
    (intake / "schet.eml").write_text(CYRILLIC, encoding="utf-8")
    config = tmp_path / "mailfiler.yaml"
    sample = (REPO / "samples" / "mailfiler.yaml").read_text(encoding="utf-8")
    head, _, routes = sample.replace("path: mail", f"path: {sample_dir}").partition("routes:")
    config.write_text(
        head.rstrip("\n")
        + f"""
  - name: intake
    kind: local
    path: {intake}
    record_type: case
    addresses: [intake@case.example]
    smtp: {{host: 127.0.0.1, port: {sink.port}, tls: none, auth: none}}

routes:{routes}""",
        encoding="utf-8",
    )
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    common = ["--config", str(config), "--settings", str(tmp_path / "none.json")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *args, *common],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )

    for path, name in ((sample_dir, "sample"), (intake, "intake")):
        done = run("import", str(path), "--mailbox", name, "--quiet", "--process")
        assert done.returncode == 0, done.stderr[-2000:]

    # list: newest first, with a status column; the filters narrow it.
    listed = run("records", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 5
    created = [r["created_at"] for r in rows]
    assert created == sorted(created, reverse=True)
    (schet,) = [r for r in rows if r["mailbox"] == "intake"]
    assert schet["title"] == "Счёт №42 не оплачен" and schet["contact"] == "julia@example.ru"
    number = schet["number"]
    display = f"CASE-{number}"
    table = run("records", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "STATUS", "MSGS", "CREATED", "CONTACT", "TITLE"]
    line = next(x for x in table if x.startswith(display + " "))
    assert line.split()[1:3] == ["new", "1"] and line.endswith("Счёт №42 не оплачен")

    def ids(*filters: str) -> list[str]:
        out = run("records", "list", "--json", *filters)
        assert out.returncode == 0, out.stderr
        return [json.loads(x)["id"] for x in out.stdout.splitlines()]

    assert ids("--mailbox", "intake") == [display]
    assert ids("--contact", "JULIA@example.ru") == [display]
    assert len(ids("--mailbox", "sample")) == 4
    assert len(ids("--type", "case", "--status", "new")) == 5
    unknown = run("records", "list", "--mailbox", "nope")
    assert unknown.returncode == 1 and "no mailbox 'nope' (known: sample, intake)" in unknown.stderr

    # show: 5, case-5 and CASE-5 are the same record; attachments and direction are shown.
    shown = {
        ident: json.loads(run("records", "show", ident, "--json").stdout)["key"]
        for ident in (str(number), display.lower(), display)
    }
    assert len(set(shown.values())) == 1
    text_view = run("records", "show", display.lower()).stdout
    assert f"{display}  Счёт №42 не оплачен  [new]" in text_view
    assert "  <- in   Юлия Петрова <julia@example.ru>\n" in text_view, text_view
    assert "attachment: schet-42.pdf (application/pdf, " in text_view
    missing = run("records", "show", "case-999")
    assert missing.returncode == 1 and missing.stderr == "mailfiler: no record CASE-999\n"

    # status: through the API's update service, audited from the cli.
    changed = run("records", "status", str(number), "pending")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == f"{display}: status pending"
    assert ids("--status", "pending") == [display]
    wrong = run("records", "status", display, "sleeping")
    assert wrong.returncode == 1
    assert wrong.stderr == "mailfiler: status must be one of new, open, pending, closed\n"

    # reply: queued through the API's reply service, sent to the SMTP sink with --process.
    replied = run(
        "records", "reply", display, "--body", "Добрый день! Счёт оплачен сегодня.", "--process"
    )
    assert replied.returncode == 0, replied.stderr[-2000:]
    assert replied.stdout.startswith(f"{display}: reply to julia@example.ru queued (reply-")
    ((mail_from, recipients, _),) = sink.received
    assert mail_from == "intake@case.example" and recipients == ["julia@example.ru"]
    (sent,) = sink.messages()
    assert isinstance(sent, EmailMessage)  # parsed with the default policy
    subject = str(make_header(decode_header(str(sent["Subject"]))))
    assert subject == f"Re: Счёт №42 не оплачен [{display}]"
    body = sent.get_body(("plain",))
    assert body is not None and "Счёт оплачен сегодня" in body.get_content()
    assert sent["In-Reply-To"] == "<schet-42@example.ru>"

    # file-on: a sample mail filed on the Cyrillic record, as the API's re-file service does.
    printer = next(r for r in rows if r["title"].startswith("Printer"))
    first = json.loads(run("records", "show", printer["id"], "--json").stdout)["timeline"][0]
    filed = run("records", "file-on", display, "--message-id", first["message_id"], "--process")
    assert filed.returncode == 0, filed.stderr[-2000:]
    assert filed.stdout.startswith(f"{display}: message ")
    after = json.loads(run("records", "show", display, "--json").stdout)
    assert first["subject"] in [e["subject"] for e in after["timeline"]]

    trail = run("audit", "--record", display.lower(), "--json")
    acts = [json.loads(x) for x in trail.stdout.splitlines()]
    by_cli = {a["action"] for a in acts if a["source"] == "cli"}
    assert {"update", "reply", "file_message"} <= by_cli, acts
