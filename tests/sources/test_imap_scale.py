"""Issue 6's acceptance run: a 10,000-message mailbox in Dovecot, first sync files each message
exactly once; the next poll finds nothing and stays cheap."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from shared.pipeline.ingest import ingest_mailbox
from shared.sources.imap.source import ImapSource
from shared.store.stores import QUEUES, poison

from ..helpers import filed_keys, timeline_entries
from .test_imap import USER, World, dovecot, mail, world

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
__all__ = ["dovecot", "world"]
MESSAGES = 10_000


def test_a_ten_thousand_message_mailbox_is_filed_exactly_once(world: World) -> None:
    world.dovecot.drop_messages(USER, [mail(i) for i in range(MESSAGES)])
    polls = 0
    while True:  # the cap per poll (500) spreads the first sync over several polls
        outcome = world.poll()
        polls += 1
        if outcome == "queued 0":
            break
        assert outcome.startswith("queued "), outcome
    assert polls == MESSAGES // 500 + 1
    world.host.drain(timeout=1800)
    entries = timeline_entries(world.stores, ["MessageKey"])
    per_message = Counter(e["MessageKey"] for e in entries)
    assert len(per_message) == MESSAGES and max(per_message.values()) == 1
    assert len(filed_keys(world.stores)) == MESSAGES
    assert all(not world.stores.queues.depth(poison(q)) for q in QUEUES)
    source = world.ctx.source("imap")
    assert isinstance(source, ImapSource)
    assert ingest_mailbox(world.stores, "imap", source, now=datetime.now(UTC)).queued == 0
    assert source.commands <= 5
