"""Every drop keeps its own row, mail is found by its source id, and attachment names in any
script file and download under their name (issue 17 points 3 and 6). Azurite, the local host,
real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobSasPermissions, generate_blob_sas

from shared.cli.azurite import Azurite
from shared.cli.operations import cmd_messages_by_source, cmd_messages_show
from shared.core.config import parse_config
from shared.core.contracts import InboundMessage
from shared.core.message import id_key
from shared.services.context import AppContext, set_context
from shared.services.messages import message_status
from shared.settings import AppSettings
from shared.stages.polls import poll_all
from shared.store.blobs import RAW_CONTAINER
from shared.store.stores import HELD, INBOUND, MESSAGES, QUEUES, Stores, poison

from .helpers import local_host, timeline_entries
from .serving import serve_api

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NAMES = {
    "japanese": "てすと.txt",
    "chinese": "季度报告 2026.txt",
    "cyrillic": "Отчёт за ноябрь.txt",
    "arabic": "تقرير الربع.txt",
    "emoji": "📎 notes 🎉.txt",
    "latin1": "Übersicht.txt",
}


def file_all(context: AppContext) -> None:
    poll_all(context, NOW)
    local_host(context.stores.queues).drain()


def no_poison(stores: Stores) -> None:
    assert {q: stores.queues.depth(poison(q)) for q in QUEUES} == {q: 0 for q in QUEUES}


def newsletter(mid: str, body: str) -> str:
    return (
        "From: news@shop.example\nTo: support@mailfiler.example\nSubject: Angebote der Woche\n"
        f"Date: Tue, 24 Nov 2026 09:00:00 +0000\nMessage-ID: <{mid}>\n"
        "List-Unsubscribe: <mailto:unsubscribe@shop.example>\nPrecedence: bulk\n\n"
        f"{body}\n"
    )


def download_name(header: str) -> str:
    """The name a browser saves under (RFC 6266 4.3: `filename*` wins over `filename`), decoded
    by the standard library's RFC 2231 code; the `filename` fallback must be plain ASCII."""
    parsed = Message()
    parsed["Content-Disposition"] = header
    params = parsed.get_params(header="content-disposition") or []
    plain = [v for k, v in params if k == "filename" and isinstance(v, str)]
    extended = [v for k, v in params if k == "filename" and isinstance(v, tuple)]
    assert len(plain) == 1 and plain[0].isascii() and plain[0].endswith(".txt"), header
    if not extended:
        return plain[0]
    assert "filename*=UTF-8''" in header
    return str(collapse_rfc2231_value(extended[0]))


# --- point 3: attachment names in any script ----------------------------------------------------


def test_attachment_names_in_any_script_are_filed_and_download_under_their_name(
    context: AppContext, sample_dir: Path
) -> None:
    mail = EmailMessage()
    mail["From"] = "Юлия <julia@example.org>"
    mail["To"] = "support@mailfiler.example"
    mail["Subject"] = "Файлы"
    mail["Message-ID"] = "<names-1@example.org>"
    mail.set_content("Вложения во всех письменностях.")
    for script, name in NAMES.items():
        # EmailMessage writes RFC 2231 `filename*=utf-8''...` for a non-ASCII name.
        mail.add_attachment(f"{script}\n".encode(), "text", "plain", filename=name)
    (sample_dir / "20-names.eml").write_bytes(bytes(mail))
    file_all(context)
    stores = context.stores
    no_poison(stores)
    status = message_status(stores, "<names-1@example.org>")
    assert status is not None and status["status"] == "filed"
    (attachments,) = [
        a
        for e in timeline_entries(stores)
        if (a := json.loads(e.get("Attachments") or "[]"))
        and NAMES["japanese"] in {x["filename"] for x in a}
    ]
    assert sorted(a["filename"] for a in attachments) == sorted(NAMES.values())
    account = stores.account.blobs
    key = account.credential.account_key
    for attachment in attachments:
        name, blob = attachment["filename"], attachment["blob"]
        assert blob, attachment
        # The header as Azurite answers it on the wire, read over plain HTTP with a SAS.
        sas = generate_blob_sas(
            str(account.account_name),
            RAW_CONTAINER,
            blob,
            account_key=key,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(UTC) + timedelta(minutes=5),
        )
        url = f"{account.get_blob_client(RAW_CONTAINER, blob).url}?{sas}"
        with urllib.request.urlopen(url, timeout=10) as response:
            header = response.headers["Content-Disposition"]
            content = response.read()
        header.encode("ascii")  # HTTP headers are Latin-1; ours stay ASCII
        assert header.startswith("attachment;")
        assert download_name(header) == name
        script = next(s for s, n in NAMES.items() if n == name)
        assert content == f"{script}\n".encode()


# --- point 6: every drop keeps its own row ------------------------------------------------------


def test_two_dropped_mails_with_one_message_id_each_keep_a_row(
    context: AppContext, sample_dir: Path
) -> None:
    first, second = sample_dir / "30-deals.eml", sample_dir / "31-deals.eml"
    first.write_text(newsletter("deals@shop.example", "Erste Ausgabe."))
    second.write_text(newsletter("deals@shop.example", "Вторая версия, другой текст."))
    file_all(context)
    stores = context.stores
    no_poison(stores)
    status = message_status(stores, "<deals@shop.example>")
    assert status is not None and status["status"] == "dropped" and status["filed"] is None
    sources = sorted(u["source_id"] for u in status["unfiled"])
    assert sources == [str(first), str(second)]
    assert all(u["action"] == "drop" and u["reasons"] for u in status["unfiled"])
    assert len({u["blob"] for u in status["unfiled"]}) == 2

    # A redelivery of one copy (the same inbound message again) rewrites its own row only.
    # (The partition also holds ingest's `i-` rows, one per copy, written before it is queued.)
    rows = list(stores.table(MESSAGES).partition(id_key("deals@shop.example")))
    drops = [r for r in rows if str(r["RowKey"]).startswith("drop")]
    (row,) = [r for r in drops if r["SourceId"] == str(first)]
    stores.queues.send(
        INBOUND, InboundMessage(mailbox="sample", source_id=str(first), blob=row["Blob"])
    )
    local_host(stores.queues).drain()
    no_poison(stores)
    again = list(stores.table(MESSAGES).partition(id_key("deals@shop.example")))
    assert sorted(r["RowKey"] for r in again) == sorted(r["RowKey"] for r in rows)
    assert len([r for r in again if str(r["RowKey"]).startswith("drop")]) == 2


def test_many_copies_dropped_at_once_each_keep_a_row(context: AppContext, sample_dir: Path) -> None:
    """Eight different mails with one Message-ID, mapped and filed by concurrent workers."""
    for i in range(8):
        (sample_dir / f"4{i}-deals.eml").write_text(newsletter("same@shop.example", f"Nr. {i}"))
    file_all(context)
    no_poison(context.stores)
    status = message_status(context.stores, "same@shop.example")
    assert status is not None
    assert sorted(u["source_id"] for u in status["unfiled"]) == sorted(
        str(sample_dir / f"4{i}-deals.eml") for i in range(8)
    )


# --- point 6: found by source id ------------------------------------------------------------------


def test_mail_without_message_id_is_found_by_source_id(
    context: AppContext, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file_all(context)
    stores = context.stores
    source = str(sample_dir / "08-no-message-id.eml")
    assert cmd_messages_by_source(stores, ["sample"], source, as_json=True) == 0
    (copy,) = json.loads(capsys.readouterr().out)
    assert copy["mailbox"] == "sample" and copy["source_id"] == source
    assert copy["key"].startswith("s") and len(copy["key"]) == 65
    message = copy["message"]
    assert message["status"] == "filed" and message["filed"]["source_id"] == source
    assert str(message["filed"]["display_id"]).startswith("CASE-")

    assert cmd_messages_by_source(stores, ["sample"], source, as_json=False) == 0
    text = capsys.readouterr().out
    assert f"source {source} in mailbox sample" in text
    assert f"filed on {message['filed']['display_id']}" in text

    assert cmd_messages_by_source(stores, ["sample"], "/nope/имя.eml", as_json=False) == 1
    assert "no mail with source id /nope/имя.eml was ingested by sample" in capsys.readouterr().err


def test_ingested_but_not_yet_mapped_mail_is_named_by_source_id(
    context: AppContext, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    poll_all(context, NOW)  # ingested and queued; nothing mapped
    source = str(sample_dir / "08-no-message-id.eml")
    assert cmd_messages_by_source(context.stores, ["sample"], source, as_json=False) == 0
    assert "not mapped yet" in capsys.readouterr().out


def test_ingested_mail_is_pending_until_it_is_filed(
    context: AppContext, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Between ingest and filing a Message-ID is known (its `i-` row): `messages show` says
    pending and names the copy, instead of knowing nothing."""
    (sample_dir / "30-pending.eml").write_text(
        "From: Кира <kira@example.org>\nTo: support@mailfiler.example\nSubject: 待处理\n"
        "Date: Tue, 24 Nov 2026 09:00:00 +0000\nMessage-ID: <pending-1@example.org>\n\nТекст\n",
        encoding="utf-8",
    )
    poll_all(context, NOW)  # ingested and queued; nothing mapped
    status = message_status(context.stores, "<pending-1@example.org>")
    assert status is not None and status["status"] == "pending", status
    (copy,) = status["ingested"]
    assert copy["mailbox"] == "sample"
    assert copy["source_id"] == str(sample_dir / "30-pending.eml")
    assert cmd_messages_show(context.stores, "<pending-1@example.org>", as_json=False) == 0
    assert "pending: ingested, not filed yet" in capsys.readouterr().out
    local_host(context.stores.queues).drain()
    status = message_status(context.stores, "<pending-1@example.org>")
    assert status is not None and status["status"] == "filed"
    assert [c["source_id"] for c in status["ingested"]] == [copy["source_id"]]


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, path: str, **params: str) -> tuple[int, Any]:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def api(context: AppContext) -> Iterator[Api]:
    file_all(context)
    with serve_api(local_host(context.stores.queues)) as served:
        yield Api(served.base)


def test_the_api_finds_mail_by_source_id(api: Api, sample_dir: Path) -> None:
    source = str(sample_dir / "08-no-message-id.eml")
    status, body = api.get("/messages", source_id=source)
    assert status == 200, body
    (copy,) = body["messages"]
    assert copy["mailbox"] == "sample" and copy["message"]["status"] == "filed"
    assert api.get("/messages", source_id=source, mailbox="sample")[0] == 200

    status, body = api.get("/messages", source_id=source, mailbox="nope")
    assert (status, body["error"]["code"]) == (404, "unknown_mailbox")
    status, body = api.get("/messages", source_id="/no/such/файл.eml")
    assert (status, body["error"]["code"]) == (404, "unknown_message")
    status, body = api.get("/messages")
    assert (status, body["error"]["code"]) == (400, "bad_query")
    status, body = api.get("/messages", source_id="x" * 5000)
    assert (status, body["error"]["code"]) == (400, "bad_query")


HOLD_CONFIG = """
record_types: [{{name: case, prefix: CASE}}]
mailboxes:
  - {{name: support, kind: local, path: "{folder}", record_type: case,
      addresses: [support@example.com]}}
routes:
  - {{name: all, record_type: case}}
rate_limit: {{per_sender: 1, window_minutes: 60}}
"""


def test_two_held_mails_with_one_message_id_each_keep_a_row(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    ctx = AppContext(settings, parse_config(HOLD_CONFIG.format(folder=folder)), tmp_path, stores)
    set_context(ctx)
    try:
        mail = (
            "From: zhang@example.cn\nTo: support@example.com\nSubject: {s}\n"
            "Message-ID: <{m}>\n\n{b}\n"
        )
        (folder / "1.eml").write_text(mail.format(s="打印机", m="z1@example.cn", b="坏了"))
        file_all(ctx)
        # Over the sender's limit: held. Two different mails with one Message-ID.
        (folder / "2.eml").write_text(mail.format(s="再问", m="z2@example.cn", b="第一版"))
        (folder / "3.eml").write_text(mail.format(s="再问", m="z2@example.cn", b="第二版"))
        file_all(ctx)
    finally:
        set_context(None)
    no_poison(stores)
    status = message_status(stores, "z2@example.cn")
    assert status is not None and status["status"] == "held"
    assert sorted(u["source_id"] for u in status["unfiled"]) == [
        str(folder / "2.eml"),
        str(folder / "3.eml"),
    ]
    held = list(stores.table(HELD).partition("support"))
    assert sorted(r["SourceId"] for r in held) == [str(folder / "2.eml"), str(folder / "3.eml")]
