"""EWS: items filed per second from the fake EWS server, and EWS calls per item.

Unmodified exchangelib against tests/fakes/ews.py (real HTTP on loopback) and a private
Azurite. Run with ``python -m bench.bench_ews``; no figure is asserted (the run checks that
every item arrived, so a figure is never one of a broken sync).

1. The EWS side alone: a fresh `EwsSource` lists and reads every item of a 2,000-item inbox
   (SyncFolderItems pages, GetItem chunks of 100), nothing stored, for page sizes 10, 100
   and 512, side by side: calls per item and items per second.
2. Through the whole pipeline: polls (500 items each, the default cap) until caught up, then
   the map and file stages on the local host; items filed per second end to end, and every EWS
   request the fake saw (SyncFolderItems, GetItem, GetFolder) per item filed.
3. Filed with after-filing actions (mark read, a category, move to `Mailfiler/Filed`, a path
   created by the first mail): every request the fake saw, counted per mail filed and acted on
   (issue 18's goal: at most 4, i.e. a share of the sync, GetItem, one UpdateItem, one
   MoveItem; the folder is resolved once per mailbox and process, not per mail).
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exchangelib import close_connections  # type: ignore[import-untyped]

from shared.cli.azurite import Azurite
from shared.core.config import EwsMailbox, parse_config
from shared.services.context import AppContext, set_context
from shared.settings import AppSettings
from shared.sources.ews.source import EwsSource
from shared.stages.polls import poll_one
from shared.store.account import RequestCounter, StorageSettings
from shared.store.stores import FILING, INBOUND, POLLS, Stores
from tests.fakes.ews import FakeEws
from tests.helpers import filed_keys, local_host

USER, PASSWORD, SETTING = "bench@contoso.example", "ews-bench-password", "EWS_BENCH_PASSWORD"
ITEMS = 2000
PAGE_SIZES = (10, 100, 512)


def mime(n: int) -> bytes:
    body = " ".join(f"line {n}-{i} about the order and its delivery" for i in range(40))
    return (
        f"From: Customer {n} <customer{n}@example.org>\r\nTo: {USER}\r\n"
        f"Subject: Order {n} question\r\nMessage-ID: <ews-bench-{n}@example.org>\r\n"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
    ).encode()


def config_yaml(url: str, page_size: int = 100) -> str:
    return (
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes:\n"
        "  - name: ews\n"
        "    kind: ews\n"
        f"    endpoint: {url}\n"
        f"    email: {USER}\n"
        "    auth: basic\n"
        f"    username: {USER}\n"
        f"    password_setting: {SETTING}\n"
        "    access_type: delegate\n"
        f"    page_size: {page_size}\n"
        f"    max_per_poll: {ITEMS}\n"
        "    record_type: case\n"
    )


def ews_alone(fake: FakeEws, page_size: int) -> dict[str, Any]:
    mailbox = parse_config(config_yaml(fake.url, page_size)).mailbox("ews")
    assert isinstance(mailbox, EwsMailbox)
    before = sum(fake.calls.values())
    started = time.perf_counter()
    source = EwsSource(mailbox)
    ids = list(source.poll({}).refs)
    size = sum(len(source.read(i).raw) for i in ids)
    elapsed = time.perf_counter() - started
    calls = sum(fake.calls.values()) - before
    close_connections()
    return {"page": page_size, "items": len(ids), "bytes": size, "s": elapsed, "calls": calls}


def pipeline(fake: FakeEws, azurite: Azurite, tmp: str) -> dict[str, Any]:
    counter = RequestCounter()
    stores = Stores.connect(StorageSettings(connection_string=azurite.connection_string), counter)
    stores.ensure()
    config = parse_config(
        config_yaml(fake.url).replace(f"max_per_poll: {ITEMS}", "max_per_poll: 500")
    )
    settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
    ctx = AppContext(settings, config, Path(tmp), stores)
    set_context(ctx)
    host = local_host(stores.queues, visibility_timeout=0)
    fake.calls.clear()
    try:
        started = time.perf_counter()
        poll_one(ctx, "ews", datetime.now(UTC))
        host.drain(only={POLLS})  # the backlog's follow-up polls, each sent by the one before
        polled = time.perf_counter() - started
        host.drain(only={INBOUND, FILING}, timeout=1800)
        elapsed = time.perf_counter() - started
        filed = len(filed_keys(stores))
    finally:
        set_context(None)
        close_connections()
    return {
        "filed": filed,
        "s": elapsed,
        "polled_s": polled,
        "calls": dict(fake.calls),
    }


ACTED = 300  # mails filed with after-filing actions (part 3)
GOAL_PER_MAIL = 4


def with_actions(azurite: Azurite, tmp: str) -> dict[str, Any]:
    """Part 3: a fresh fake and mailbox, every mail filed, marked read, categorised and moved."""
    counter = RequestCounter()
    stores = Stores.connect(StorageSettings(connection_string=azurite.connection_string), counter)
    stores.ensure()
    with FakeEws(read_flag_changes=True) as fake:
        fake.add_user(USER, PASSWORD)
        fake.add_messages(USER, "inbox", (mime(n) for n in range(ITEMS, ITEMS + ACTED)))
        config = parse_config(
            config_yaml(fake.url)
            + "    after_filing: {mark_read: true, category: Mailfiler, move_to: Mailfiler/Filed}\n"
        )
        settings = AppSettings.model_validate({"AzureWebJobsStorage": azurite.connection_string})
        ctx = AppContext(settings, config, Path(tmp), stores)
        set_context(ctx)
        host = local_host(stores.queues, visibility_timeout=0)
        fake.calls.clear()
        try:
            poll_one(ctx, "ews", datetime.now(UTC))
            host.drain(timeout=1800)  # every stage and queue, the actions' own included
            moved = len(fake.folder_items(USER, "Mailfiler/Filed"))
        finally:
            set_context(None)
            close_connections()
        return {"moved": moved, "calls": dict(fake.calls)}


def main() -> None:
    before = os.environ.get(SETTING)
    os.environ[SETTING] = PASSWORD
    azurite = Azurite()
    azurite.start()
    try:
        with FakeEws(read_flag_changes=True) as fake, tempfile.TemporaryDirectory() as tmp:
            fake.add_user(USER, PASSWORD)
            fake.add_messages(USER, "inbox", (mime(n) for n in range(ITEMS)))
            alone = [ews_alone(fake, size) for size in PAGE_SIZES]
            whole = pipeline(fake, azurite, tmp)
        with tempfile.TemporaryDirectory() as tmp:
            acted = with_actions(azurite, tmp)
    finally:
        azurite.stop()
        if before is None:
            os.environ.pop(SETTING, None)
        else:
            os.environ[SETTING] = before
    for row in alone:
        if row["items"] != ITEMS:
            raise RuntimeError(f"page size {row['page']}: listed {row['items']}, not {ITEMS}")
    if whole["filed"] != ITEMS:
        raise RuntimeError(f"the pipeline filed {whole['filed']} items, not {ITEMS}")
    if acted["moved"] != ACTED:
        raise RuntimeError(f"after filing, {acted['moved']} mails were moved, not {ACTED}")
    report(alone, whole, acted)


def report(alone: list[dict[str, Any]], whole: dict[str, Any], acted: dict[str, Any]) -> None:
    size = alone[0]["bytes"] / ITEMS / 1024
    print(f"\nEWS: {ITEMS} items (~{size:.1f} KiB of MIME each), unmodified exchangelib against")
    print("the fake EWS server on loopback\n")
    print(f"{'EWS side alone':<24}{'calls':>7}{'calls/item':>12}{'items/s':>10}")
    for row in alone:
        name = f"page size {row['page']}"
        rate = row["items"] / row["s"]
        print(f"{name:<24}{row['calls']:>7}{row['calls'] / row['items']:>12.3f}{rate:>10.0f}")
    calls = whole["calls"]
    total = sum(calls.values())
    print(
        f"\nwhole pipeline (page size 100, 500 per poll, Azurite): {whole['filed']} filed in "
        f"{whole['s']:.1f} s = {whole['filed'] / whole['s']:.1f} items/s filed "
        f"(of which ingest, 500 per poll: {whole['polled_s']:.1f} s)"
    )
    detail = ", ".join(f"{name} {count}" for name, count in sorted(calls.items()))
    print(f"EWS calls: {total} = {total / whole['filed']:.3f} per item filed ({detail})")
    calls = acted["calls"]
    total = sum(calls.values())
    detail = ", ".join(
        f"{name} {count / acted['moved']:.3f}" for name, count in sorted(calls.items())
    )
    print(
        f"\nfiled with actions (mark read, category, move to Mailfiler/Filed): {acted['moved']} "
        f"mails, EWS requests per filed mail: {total / acted['moved']:.2f} "
        f"(goal <= {GOAL_PER_MAIL}; {detail})"
    )


if __name__ == "__main__":
    main()
