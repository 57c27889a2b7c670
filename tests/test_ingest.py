"""Ingest with its storage calls in flight together (issue 22 goal 3): every mail queued once,
noted only once queued, in the source's order when asked, and a failure midway loses and
duplicates nothing. Against Azurite; the failure is a refused request at the HTTP layer."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.pipeline.transport import HttpTransport

from shared.cli.azurite import Azurite
from shared.core.contracts import BUNDLE_MAILS
from shared.core.message import id_key
from shared.services.inbound import inbound_mails
from shared.services.ingest import ingest_mailbox
from shared.sources.local import LocalSource
from shared.store import ingest_notes
from shared.store import messages as message_rows
from shared.store.account import RequestCounter, StorageSettings
from shared.store.stores import INBOUND, INGEST, MESSAGES, Stores

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MAIL = (
    "From: Anna <anna@example.org>\nTo: support@mailfiler.example\nSubject: case {i}\n"
    "Message-ID: <ingest-{i}@example.org>\n\nbody {i}\n"
)


class Refused(Exception):
    """The refusal the transport answers with (not an AzureError: the SDK does not retry it)."""


class RefuseOneSend(RequestCounter):
    """Refuses the `nth` message put on the `inbound` queue (1-based), at the HTTP layer."""

    def __init__(self, nth: int) -> None:
        super().__init__()
        self.nth = nth
        self.sends = 0

    def transport(self, service: str, session: Any = None) -> HttpTransport[Any, Any]:
        outer = self
        inner = super().transport(service, session)

        class _Refusing(type(inner)):  # type: ignore[misc]
            def send(self, request: Any, **kwargs: Any) -> Any:
                if request.method == "POST" and "/inbound/messages" in str(request.url):
                    with outer._lock:
                        outer.sends += 1
                        refuse = outer.sends == outer.nth
                    if refuse:
                        raise Refused("refused by the test's transport")
                return super().send(request, **kwargs)

        return _Refusing(session=session, session_owner=session is None)


def write_mail(folder: Path, count: int) -> list[str]:
    folder.mkdir()
    for i in range(count):
        (folder / f"{i:04d}.eml").write_text(MAIL.format(i=i))
    return list(LocalSource(folder).refs())


def drain(stores: Stores, sizes: list[int] | None = None) -> list[str]:
    """Every inbound mail's source id, in the queue's order, bundles unpacked (the queue is
    emptied); `sizes` gets each queue message's count of mails."""
    out: list[str] = []
    while batch := stores.queues.receive(INBOUND, max_messages=32, visibility_timeout=300):
        for message in batch:
            mails = inbound_mails(message.body)
            out.extend(mail.source_id for mail in mails)
            if sizes is not None:
                sizes.append(len(mails))
            stores.queues.delete(INBOUND, message)
    return out


def noted(stores: Stores) -> set[str]:
    table = stores.table(INGEST)
    return {e["SourceId"] for e in table.partition("support", ["SourceId"])}


@pytest.fixture
def refusing(azurite: Azurite, stores: Stores) -> Iterator[tuple[Stores, RefuseOneSend]]:
    """A second Stores on the same (emptied) storage whose third inbound send is refused."""
    counter = RefuseOneSend(nth=3)
    yield (
        Stores.connect(StorageSettings(connection_string=azurite.connection_string), counter),
        counter,
    )


def test_every_mail_is_queued_once_and_noted(stores: Stores, tmp_path: Path) -> None:
    refs = write_mail(tmp_path / "mail", 230)
    summary = ingest_mailbox(stores, "support", LocalSource(tmp_path / "mail"), now=NOW)
    assert (summary.queued, summary.complete) == (230, True)
    sizes: list[int] = []
    queued = drain(stores, sizes)
    assert queued == refs  # the source's order: an import is numbered as explain numbers it
    # In bundles: full ones (these small mails fit BUNDLE_MAILS a message), then the rest.
    assert sizes == [BUNDLE_MAILS] * (230 // BUNDLE_MAILS) + [230 % BUNDLE_MAILS]
    assert noted(stores) == set(refs)
    for i, ref in enumerate(refs):  # each Message-ID on its way: its raw mail, naming the copy
        key = id_key(f"ingest-{i}@example.org")
        [copy] = stores.blobs.ingested(key)
        assert (copy.mailbox, copy.source_id, copy.ingested_at) == ("support", ref, NOW)
        assert stores.blobs.get(copy.blob) is not None
        assert message_rows.state(stores, key) == (None, True)
    # Nothing else notes it: no row in table Messages until the map stage's.
    assert list(stores.table(MESSAGES).client.list_entities()) == []
    again = ingest_mailbox(stores, "support", LocalSource(tmp_path / "mail"), now=NOW)
    assert (again.queued, again.skipped, drain(stores)) == (0, 230, [])


def test_a_refused_send_midway_loses_and_duplicates_nothing(
    refusing: tuple[Stores, RefuseOneSend], tmp_path: Path
) -> None:
    faulty, counter = refusing
    refs = write_mail(tmp_path / "mail", 150)
    with pytest.raises(Refused):
        ingest_mailbox(faulty, "support", LocalSource(tmp_path / "mail"), now=NOW)
    first = drain(faulty)
    noted_first = noted(faulty)
    # The two bundles before the refused third went out (once each); the third did not, nor
    # anything after it.
    assert first == refs[: 2 * BUNDLE_MAILS]
    # A row is written only for mail that is on the queue: what is not noted is sent again.
    assert noted_first <= set(first)
    summary = ingest_mailbox(faulty, "support", LocalSource(tmp_path / "mail"), now=NOW)
    assert summary.complete and counter.sends > 3
    second = drain(faulty)
    assert sorted(set(first) | set(second)) == sorted(refs)  # nothing lost
    assert not noted_first & set(second)  # what was noted is not sent again
    assert len(first) + len(second) == 150 + len(set(first) & set(second))
    assert noted(faulty) == set(refs)


def test_a_long_incremental_listing_reads_the_partition_once(
    stores: Stores, counter: RequestCounter, tmp_path: Path
) -> None:
    """An IMAP-style listing (incremental) of 230 ids: one partition read, not 230 lookups; a
    small partition for a long listing, a lookup each for a short one."""
    table = stores.table(INGEST)
    for start in range(0, 120, 100):
        table.upsert_batch(
            [
                ingest_notes.row("support", f"known-{i}", "b", None, NOW)
                for i in range(start, min(start + 100, 120))
            ]
        )
    assert ingest_notes.done(table, "support", at_most=119) is None
    assert ingest_notes.done(table, "support", at_most=120) == {
        e["RowKey"] for e in table.partition("support", ["RowKey"])
    }

    class Listing(LocalSource):
        def poll(self, cursor: Any) -> Any:
            return dataclasses.replace(super().poll(cursor), incremental=True)

    write_mail(tmp_path / "mail", 230)
    counter.reset()
    summary = ingest_mailbox(stores, "support", Listing(tmp_path / "mail"), now=NOW)
    assert summary.queued == 230
    # 230 blobs (each notes its Message-ID as on its way), 8 sends (bundles), 3 Ingest
    # batches, 1 partition read: no lookups, no other table write.
    assert counter.snapshot()["blob"] == 230
    assert counter.snapshot()["table"] == 3 + 1
    assert counter.snapshot()["queue"] == -(-230 // BUNDLE_MAILS)
