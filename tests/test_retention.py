"""Mailbox actions beyond filing: retention (delete after N days) and the failure folder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.core.contracts import BUNDLE_MAILS, InboundMessage, PoisonMessage
from shared.services.context import AppContext, set_context
from shared.services.ingest import bundle_body
from shared.services.retention import run_retention
from shared.settings import AppSettings, load_config
from shared.stages.polls import poll_all
from shared.store.queues import decode, encode
from shared.store.stores import ACTIONS, INBOUND, RETENTION, Stores, poison

from .helpers import local_host

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make_context(stores: Stores, azurite: Azurite, tmp: Path, mailbox_yaml: str) -> AppContext:
    config_file = tmp / "mailfiler.yaml"
    config_file.write_text(
        f"record_types: [{{name: case, prefix: CASE}}]\nmailboxes:\n{mailbox_yaml}"
    )
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(config_file)}
    )
    ctx = AppContext(settings, load_config(config_file), tmp, stores)
    set_context(ctx)
    return ctx


def mail(folder: Path, n: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"{i}.eml").write_text(
            f"From: c{i}@example.org\nTo: support@example.com\nSubject: Question {i}\n"
            f"Message-ID: <q{i}@example.org>\nDate: Tue, 24 Nov 2026 10:00:00 +0000\n\nHi\n"
        )


def actions(stores: Stores, action: str) -> list[dict[str, object]]:
    return [a for a in stores.table(ACTIONS).all() if a["Action"] == action]


def test_handled_mail_is_deleted_when_due_and_not_before(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    mail(tmp_path / "keep3", 3)
    mail(tmp_path / "forever", 2)
    ctx = make_context(
        stores,
        azurite,
        tmp_path,
        "  - {name: keep3, kind: local, path: keep3, record_type: case,"
        " after_filing: {delete_after_days: 3}}\n"
        "  - {name: forever, kind: local, path: forever, record_type: case}\n",
    )
    try:
        poll_all(ctx, NOW)
        local_host(stores.queues).drain()
        notes = list(stores.table(RETENTION).all())
        # Only the mailbox with retention, one note per filed mail, due in three days.
        assert {n["Mailbox"] for n in notes} == {"keep3"} and len(notes) == 3
        filed_on = datetime.now(UTC)
        assert {n["PartitionKey"] for n in notes} == {f"{filed_on + timedelta(days=3):%Y%m%d}"}

        early = run_retention(ctx, filed_on + timedelta(days=2))
        assert (early.deleted, early.recorded) == (0, 0)
        assert actions(stores, "delete") == []

        due = run_retention(ctx, filed_on + timedelta(days=3))
        # The local source never changes the user's files: it records the deletion.
        assert (due.recorded, due.deleted, due.failed) == (3, 0, [])
        deletes = actions(stores, "delete")
        assert len(deletes) == 3 and {d["Mailbox"] for d in deletes} == {"keep3"}
        assert list(stores.table(RETENTION).all()) == []
        again = run_retention(ctx, filed_on + timedelta(days=4))
        assert (again.recorded, again.deleted) == (0, 0)
    finally:
        set_context(None)


def test_an_unreadable_mailbox_keeps_its_due_mail_for_the_next_run(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    mail(tmp_path / "box", 2)
    ctx = make_context(
        stores,
        azurite,
        tmp_path,
        "  - {name: box, kind: local, path: box, record_type: case,"
        " after_filing: {delete_after_days: 1}}\n",
    )
    try:
        poll_all(ctx, NOW)
        local_host(stores.queues).drain()
        (tmp_path / "box").rename(tmp_path / "gone")  # the mailbox cannot be opened now
        later = datetime.now(UTC) + timedelta(days=1)
        failed = run_retention(ctx, later)
        assert failed.recorded == 0 and [name for name, _ in failed.failed] == ["box"]
        assert len(list(stores.table(RETENTION).all())) == 2
        (tmp_path / "gone").rename(tmp_path / "box")
        assert run_retention(ctx, later).recorded == 2
    finally:
        set_context(None)


def test_retention_switched_off_since_deletes_nothing(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    mail(tmp_path / "box", 1)
    box = "  - {name: box, kind: local, path: box, record_type: case%s}\n"
    ctx = make_context(stores, azurite, tmp_path, box % ", after_filing: {delete_after_days: 1}")
    try:
        poll_all(ctx, NOW)
        local_host(stores.queues).drain()
        ctx = make_context(stores, azurite, tmp_path, box % "")
        summary = run_retention(ctx, datetime.now(UTC) + timedelta(days=2))
        assert (summary.skipped, summary.recorded) == (1, 0)
        assert actions(stores, "delete") == []
        assert list(stores.table(RETENTION).all()) == []
    finally:
        set_context(None)


# A mailbox whose unfileable mail moves to its failure folder.
WITH_FAILURE_FOLDER = (
    "  - {name: box, kind: local, path: box, record_type: case, failure_folder: Mailfiler/Failed}\n"
)


def test_mail_that_cannot_be_filed_moves_to_the_failure_folder(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    mail(tmp_path / "box", 1)
    plain = "  - {name: plain, kind: local, path: box, record_type: case}\n"
    make_context(stores, azurite, tmp_path, WITH_FAILURE_FOLDER + plain)
    try:
        blob = stores.blobs.put_raw(b"Message-ID: <x@y>\r\n\r\nbody\r\n")
        # A plan naming a missing raw mail fails on every attempt.
        for mailbox in ("box", "plain"):
            stores.queues.send(
                INBOUND,
                InboundMessage(mailbox=mailbox, source_id=f"{mailbox}-1", blob=blob + "-missing"),
            )
        local_host(stores.queues, visibility_timeout=0).drain()
        failures = [decode(b, PoisonMessage) for b in stores.queues.peek(poison(INBOUND))]
        assert len(failures) == 2
        (moved,) = actions(stores, "move")
        # Only the mailbox with a failure folder; the poison message keeps the reason.
        assert moved["Mailbox"] == "box" and moved["Target"] == "Mailfiler/Failed"
        assert actions(stores, "mark_read") == []
    finally:
        set_context(None)


def test_a_poisoned_bundle_moves_each_of_its_mails_to_the_failure_folder(
    stores: Stores, azurite: Azurite, tmp_path: Path
) -> None:
    mail(tmp_path / "box", 1)
    make_context(stores, azurite, tmp_path, WITH_FAILURE_FOLDER)
    try:
        blob = stores.blobs.put_raw(b"Message-ID: <x@y>\r\n\r\nbody\r\n")
        # More mails than a bundle may carry: the whole message is malformed, and goes to the
        # poison queue as one; each mail it names still moves to the failure folder.
        mails = [
            encode(InboundMessage(mailbox="box", source_id=f"box-{i}", blob=blob))
            for i in range(BUNDLE_MAILS + 1)
        ]
        stores.queues.send_bytes(INBOUND, bundle_body(mails))
        local_host(stores.queues, visibility_timeout=0).drain()
        (failure,) = [decode(b, PoisonMessage) for b in stores.queues.peek(poison(INBOUND))]
        assert failure.reason.startswith("malformed: not a valid InboundBundle")
        moved = actions(stores, "move")
        # One move per mail (each action row is keyed by its mail).
        assert len(moved) == len({(m["PartitionKey"], m["RowKey"]) for m in moved})
        assert len(moved) == BUNDLE_MAILS + 1
        assert {(m["Mailbox"], m["Target"]) for m in moved} == {("box", "Mailfiler/Failed")}
    finally:
        set_context(None)
