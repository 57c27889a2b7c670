"""Issue 6's acceptance property: a big mailbox's first sync in Dovecot queues each message
exactly once, spread over polls by the cap, and the next poll finds nothing and stays cheap.

Sized to prove that, not to be big: 350 messages with a cap of 150 per poll cross the cap twice
(two full polls and a partial one, each poll FETCHing in chunks of 100, the Ingest table in
transactions of 100), which 10,000 messages crossing it 20 times did not prove better in 15
minutes. The 10,000-message first sync and the idle poll of a 10,000-message mailbox (at most 5
IMAP commands) are measured by bench/bench_imap.py. That each queued message is filed exactly
once is the pipeline's part, shown with workers killed and storage failing
(tests/test_local_host.py, test_faults.py)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from shared.services.inbound import inbound_mails
from shared.services.ingest import ingest_mailbox
from shared.sources.imap.source import ImapSource
from shared.store.cursors import Cursors
from shared.store.stores import INBOUND, INGEST

from .test_imap import USER, World, dovecot, mail, world

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
__all__ = ["dovecot", "world"]
MESSAGES = 350
CAP = 150  # max_per_poll (default 500): the same code path with a smaller number


def test_a_big_mailbox_is_queued_exactly_once_over_several_polls(world: World) -> None:
    world.configure(extra=f"    max_per_poll: {CAP}\n")
    world.dovecot.drop_messages(USER, [mail(i) for i in range(MESSAGES)])
    polls = 0
    left = MESSAGES
    while True:  # the cap per poll spreads the first sync over several polls
        outcome = world.poll()
        polls += 1
        if outcome == "queued 0":
            break
        # A poll the cap stopped sends the rest on (a `polls` message, not run here).
        more = "; more to come" if left > CAP else ""
        assert outcome == f"queued {min(CAP, left)}{more}", outcome
        left -= min(CAP, left)
    assert left == 0 and polls == -(-MESSAGES // CAP) + 1  # 150, 150, 50, then nothing
    queued: Counter[str] = Counter()
    blobs = set()
    client = world.stores.queues.client(INBOUND)
    for message in client.receive_messages(messages_per_page=32, visibility_timeout=900):
        for inbound in inbound_mails(message.content):
            queued[inbound.source_id] += 1
            blobs.add(inbound.blob)
    assert len(queued) == MESSAGES and max(queued.values()) == 1
    assert len(blobs) == MESSAGES  # distinct raw mails, each in Blob Storage once
    rows = list(world.stores.table(INGEST).partition("imap", select=["RowKey"]))
    assert len(rows) == MESSAGES
    source = world.ctx.source("imap")
    assert isinstance(source, ImapSource)
    assert (
        ingest_mailbox(
            world.stores,
            "imap",
            source,
            now=datetime.now(UTC),
            cursors=Cursors(world.stores, "imap", "imap"),
        ).queued
        == 0
    )
    assert source.commands <= 5
