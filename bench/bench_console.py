"""The console with 10,000 records, on the local host and a private Azurite: p50 and p95 of
the records list (its first page, and a page filtered by status and mailbox) and of a record
page, over real HTTP on loopback. The issue's goal: p95 under 300 ms.

The first SEEDED records are filed through the real pipeline (poll, map, file), so they have
timelines, contacts and numbers; the rest are copies of their rows (each with a key, number,
title, status and time of its own), written in batches: filing 10,000 mails one by one would
take the bench longer than everything else together.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.local_app import local_app
from shared.cli.azurite import Azurite, free_port
from shared.cli.local_http import LocalHttpServer
from shared.services.context import set_context
from shared.services.records import all_records
from shared.stages.polls import poll_all
from shared.store.account import RequestCounter, StorageSettings
from shared.store.stores import RECORDS, Stores

REPO = Path(__file__).resolve().parents[1]
RECORDS_TOTAL = int(os.environ.get("MAILFILER_BENCH_RECORDS", "10000"))
SEEDED = 60
REQUESTS = int(os.environ.get("MAILFILER_BENCH_REQUESTS", "40"))
GOAL_MS = 300.0
STATUSES = ("new", "open", "pending", "closed")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _write_mail(folder: Path, i: int) -> None:
    """A new conversation, and for every third one the customer's follow-up."""
    sender = f"customer-{i}@bench.example"
    head = f"From: Kunde {i} <{sender}>\nTo: support@mailfiler.example\n"
    (folder / f"{i:04d}-a.eml").write_text(
        f"{head}Subject: Frage {i}: Drucker streikt / プリンター\n"
        f"Date: Tue, 24 Nov 2026 09:{i % 60:02d}:00 +0000\nMessage-ID: <q-{i}@bench.example>\n\n"
        f"Hallo, der Drucker im {i}. Stock druckt nicht.\n",
        encoding="utf-8",
    )
    if i % 3 == 0:
        (folder / f"{i:04d}-b.eml").write_text(
            f"{head}Subject: Re: Frage {i}\nDate: Tue, 24 Nov 2026 10:{i % 60:02d}:00 +0000\n"
            f"Message-ID: <r-{i}@bench.example>\nIn-Reply-To: <q-{i}@bench.example>\n\n"
            "Noch immer kaputt.\n",
            encoding="utf-8",
        )


def _copies(seeded: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` records like the seeded ones: the same columns, values of their own."""
    out = []
    for i in range(count):
        row = {k: v for k, v in seeded[i % len(seeded)].items() if not k.startswith("_")}
        number = 100_000 + i
        row.update(
            RowKey=f"bench-copy-{i:06d}",
            Number=number,
            DisplayId=f"CASE-{number}",
            Title=f"{row.get('Title', '')} · Kopie {i}",
            Status=STATUSES[i % len(STATUSES)],
            Contact=f"customer-{i % 500}@bench.example",
            UpdatedAt=NOW - timedelta(minutes=i),
        )
        out.append(row)
    return out


def _get(url: str) -> float:
    """One GET's time in ms (the whole answer read); raises unless it is a 200."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000


def _measure(url: str) -> tuple[float, float, float]:
    """The first request's time (it compiles templates and counts the list's scope: see
    shared/console/counts.py), then p50 and p95 of the next REQUESTS."""
    first = _get(url)
    times = sorted(_get(url) for _ in range(REQUESTS))
    cuts = statistics.quantiles(times, n=20, method="inclusive")
    return first, statistics.median(times), cuts[18]


def main() -> None:
    azurite = Azurite()
    azurite.start()
    results: list[tuple[str, float, float, float]] = []
    server: LocalHttpServer | None = None
    try:
        stores = Stores.connect(
            StorageSettings(connection_string=azurite.connection_string), RequestCounter()
        )
        stores.ensure()
        with tempfile.TemporaryDirectory() as tmp:
            mail = Path(tmp, "mail")
            mail.mkdir()
            for i in range(SEEDED):
                _write_mail(mail, i)
            ctx, host = local_app(azurite, stores, mail)
            started = time.perf_counter()
            poll_all(ctx, NOW)
            host.drain()
            seeded = sorted(all_records(stores), key=lambda r: r["Number"])
            stores.table(RECORDS).upsert_batch(_copies(seeded, RECORDS_TOTAL - len(seeded)))
            total = sum(1 for _ in all_records(stores))
            print(
                f"\nconsole: {total} records ({len(seeded)} filed, the rest copies) "
                f"in {time.perf_counter() - started:.0f} s"
            )
            server = LocalHttpServer(("127.0.0.1", free_port()), host, route_prefix="api")
            threading.Thread(target=server.serve_forever, daemon=True).start()
            console = f"http://127.0.0.1:{server.server_address[1]}/api/console"
            # A record with a conversation (the question and the follow-up) in its timeline.
            record = next(r for r in seeded if r["Title"].startswith("Frage 3:"))
            for name, url in (
                ("records list, first page", f"{console}/records"),
                ("records list, filtered", f"{console}/records?status=pending&mailbox=bench"),
                ("record page", f"{console}/records/case/{record['DisplayId']}"),
            ):
                results.append((name, *_measure(url)))
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        set_context(None)
        azurite.stop()
    print(f"console pages, {RECORDS_TOTAL} records, {REQUESTS} requests each (goal p95 < 300 ms)")
    print(f"{'page':<28}{'first ms':>9}{'p50 ms':>9}{'p95 ms':>9}  goal")
    for name, first, p50, p95 in results:
        verdict = "met" if p95 < GOAL_MS else "MISSED"
        print(f"{name:<28}{first:>9.1f}{p50:>9.1f}{p95:>9.1f}  {verdict}")
    print("first: a fresh process's first view (templates compiled, the scope's counts scanned)")


if __name__ == "__main__":
    main()
