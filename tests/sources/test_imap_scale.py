"""Issue 6's acceptance run at size: a 10,000-message mailbox in Dovecot. The first sync queues
each message exactly once (spread over polls by the cap), the next poll finds nothing and stays
cheap. That each queued message is filed exactly once is the pipeline's part, shown at 1,000
messages with workers killed and storage failing (tests/test_local_host.py, test_faults.py):
filing 10,000 here would take this machine's Azurite half an hour."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from shared.core.contracts import InboundMessage
from shared.pipeline.ingest import ingest_mailbox
from shared.sources.imap.source import ImapSource
from shared.store.queues import decode
from shared.store.stores import INBOUND, INGEST

from .test_imap import USER, World, dovecot, mail, world

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
__all__ = ["dovecot", "world"]
MESSAGES = 10_000


def test_a_ten_thousand_message_mailbox_is_queued_exactly_once(world: World) -> None:
    world.dovecot.drop_messages(USER, [mail(i) for i in range(MESSAGES)])
    polls = 0
    while True:  # the cap per poll (500) spreads the first sync over several polls
        outcome = world.poll()
        polls += 1
        if outcome == "queued 0":
            break
        assert outcome == "queued 500", outcome
    assert polls == MESSAGES // 500 + 1
    queued: Counter[str] = Counter()
    blobs = set()
    client = world.stores.queues.client(INBOUND)
    for message in client.receive_messages(messages_per_page=32, visibility_timeout=900):
        inbound = decode(message.content, InboundMessage)
        queued[inbound.source_id] += 1
        blobs.add(inbound.blob)
    assert len(queued) == MESSAGES and max(queued.values()) == 1
    assert len(blobs) == MESSAGES  # distinct raw mails, each in Blob Storage once
    rows = list(world.stores.table(INGEST).partition("imap", select=["RowKey"]))
    assert len(rows) == MESSAGES
    source = world.ctx.source("imap")
    assert isinstance(source, ImapSource)
    assert ingest_mailbox(world.stores, "imap", source, now=datetime.now(UTC)).queued == 0
    assert source.commands <= 5
