"""Storage calls per filed message, and filed messages per second, on a private Azurite.

Three scenarios through the real pipeline (ingest -> inbound -> map -> filing -> file, driven by
the local host's queue runner): new conversations (one record each), replies to filed mail, and
replies to records closed meanwhile (each reopens its record: a status write).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.local_app import local_app
from shared.cli.azurite import Azurite
from shared.cli.host import LocalHost
from shared.core.contracts import BUNDLE_MAILS
from shared.services.context import AppContext
from shared.services.ingest import ingest_mailbox
from shared.sources.local import LocalSource
from shared.store import records
from shared.store.account import Http, RequestCounter, StorageSettings
from shared.store.stores import FILING, INBOUND, Stores

REPO = Path(__file__).resolve().parents[1]
N = 200
VERBOSE = bool(os.environ.get("BENCH_CALLS"))  # also print each stage's calls by kind
# Issue 22's goals: storage calls per filed mail (ingest included), host CPU per filed mail.
GOAL_CALLS_NEW, GOAL_CALLS_REPLY, GOAL_CPU_MS = 8, 6, 15
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))  # runs of each transport, alternating
HTTPS: tuple[Http, ...] = ("requests", "urllib3")


def write(
    folder: Path, name: str, mid: str, subject: str, sender: str, reply_to: str | None = None
) -> None:
    thread = f"In-Reply-To: <{reply_to}>\nReferences: <{reply_to}>\n" if reply_to else ""
    (folder / name).write_text(
        f"From: {sender}\nTo: support@mailfiler.example\nSubject: {subject}\n"
        f"Date: Tue, 24 Nov 2026 10:00:00 +0000\nMessage-ID: <{mid}>\n{thread}\nHello.\n"
    )


def run_scenario(
    ctx: AppContext, host: LocalHost, counter: RequestCounter, folder: Path, bundle: int
) -> dict[str, float]:
    """Calls per message of each stage; map and file include the host's queue calls. `cpu_ms`:
    this process's CPU (Azurite runs apart) per filed message, ingest included."""
    source = LocalSource(folder)
    row: dict[str, float] = {}
    started, cpu = time.perf_counter(), time.process_time()
    for stage, run in (
        (
            "ingest",
            lambda: ingest_mailbox(
                ctx.stores, "bench", source, now=datetime.now(UTC), bundle=bundle
            ),
        ),
        ("map", lambda: host.drain(only={INBOUND})),
        ("file", lambda: host.drain(only={FILING})),
    ):
        counter.reset()
        run()
        row[stage] = counter.total / N
        if counter.calls is not None:
            kinds = Counter(f"{m} {p.split('/')[1].split('(')[0]}" for _, m, p in counter.calls)
            per_mail = ", ".join(f"{k} {n / N:.2f}" for k, n in kinds.items())
            print(f"{folder.name} {stage}: {per_mail}")
    row["per_second"] = N / (time.perf_counter() - started)
    row["cpu_ms"] = (time.process_time() - cpu) * 1000 / N
    return row


Row = dict[str, float]


def measure(http: Http, bundle: int = BUNDLE_MAILS) -> tuple[Row, Row, Row]:
    """The three scenarios on a fresh Azurite, the storage clients over `http`, ingest sending
    up to `bundle` mails a queue message (1: one each, as live mail comes)."""
    azurite = Azurite()
    azurite.start()
    try:
        counter = RequestCounter(record=VERBOSE)
        stores = Stores.connect(
            StorageSettings(connection_string=azurite.connection_string), counter, http=http
        )
        stores.ensure()
        with tempfile.TemporaryDirectory() as tmp:
            new, replies, reopen = Path(tmp, "new"), Path(tmp, "replies"), Path(tmp, "reopen")
            for folder in (new, replies, reopen):
                folder.mkdir()
            for i in range(N):
                # A sender per conversation: one sender of 400 mails would meet the rate limit.
                sender = f"customer-{i}@bench.example"
                write(new, f"{i:04d}.eml", f"root-{i}@bench.example", f"Question {i}", sender)
                write(
                    replies,
                    f"{i:04d}.eml",
                    f"reply-{i}@bench.example",
                    f"Re: Question {i}",
                    sender,
                    reply_to=f"root-{i}@bench.example",
                )
                write(
                    reopen,
                    f"{i:04d}.eml",
                    f"again-{i}@bench.example",
                    f"Re: Question {i}",
                    sender,
                    reply_to=f"reply-{i}@bench.example",
                )
            ctx, host = local_app(azurite, stores, Path(tmp))
            first = run_scenario(ctx, host, counter, new, bundle)
            second = run_scenario(ctx, host, counter, replies, bundle)
            for row in list(records.all_records(stores)):  # closed, not counted
                records.merge(stores, records.ref_of(row), {"Status": "closed"}, current=row)
            third = run_scenario(ctx, host, counter, reopen, bundle)
    finally:
        azurite.stop()
    return first, second, third


def main() -> None:
    # As in production (host.json and MAILFILER_LOG_LEVEL default to Information): the stages'
    # INFO lines are made (their cost counted), but not printed.
    app_log = logging.getLogger("shared")
    app_log.setLevel(logging.INFO)
    app_log.addHandler(logging.NullHandler())
    app_log.propagate = False

    # Host CPU is noisy under load: the old transport (requests) and the new (urllib3) run
    # alternately, ROUNDS times each, so both meet the same moments.
    cpu: dict[Http, list[tuple[Row, Row, Row]]] = {h: [] for h in HTTPS}
    for _ in range(ROUNDS):
        for http in HTTPS:
            cpu[http].append(measure(http))
    # Live mail (a webhook's or a poll's single new mail) travels one mail a queue message:
    # the same scenarios once more that way (call counts do not depend on the moment).
    live = measure("urllib3", bundle=1)
    for title, runs in (
        (f"a first sync ({N} mails a listing, up to {BUNDLE_MAILS} a bundle)", cpu["urllib3"][-1]),
        ("live mail (one mail a queue message)", live),
    ):
        print(f"\nstorage calls per filed message, {title}, {N} messages a scenario, Azurite")
        print(
            f"{'scenario':<28}{'ingest':>8}{'map':>7}{'file':>7}{'total':>8}{'goal':>6}"
            f"{'msgs/s':>9}{'CPU ms':>8}{'goal':>6}"
        )
        for name, row, goal in zip(
            ("new conversation (create)", "reply to filed mail", "reply reopening a record"),
            runs,
            (GOAL_CALLS_NEW, GOAL_CALLS_REPLY, GOAL_CALLS_REPLY),
            strict=True,
        ):
            total = row["ingest"] + row["map"] + row["file"]
            print(
                f"{name:<28}{row['ingest']:>8.2f}{row['map']:>7.2f}{row['file']:>7.2f}"
                f"{total:>8.2f}{'<=' + str(goal):>6}{row['per_second']:>9.1f}"
                f"{row['cpu_ms']:>8.1f}{'<=' + str(GOAL_CPU_MS):>6}"
            )
    print(
        "goals: issue 22 (storage calls per filed mail, queue calls included; host CPU per mail);"
    )
    print(
        "before (same bench, logging at INFO): 8.14 / 9.11 / 10.11 calls a first sync and "
        "10.2 / 11.2 / 12.2 live (build 19357b9, its ingest writing an 'on its way' row per mail;"
        "\n13.2 / 13.2 / 13.2 one mail a message before the map invocation filed its plans)"
    )
    print("map and file include the local host's queue calls (receive, delete, empty polls);")
    print("map files its plans in the same invocation: file counts what the filing queue had left")
    print("CPU: this process's CPU time per filed message, ingest to file (Azurite excluded)")
    print(
        f"\nhost CPU per filed message, storage clients over requests (old) and urllib3 (new):"
        f" {ROUNDS} runs of each, alternating, each on a fresh Azurite; per call = CPU per mail"
        " / storage calls per mail (parsing and deciding included, about 1 ms a mail)"
    )
    print(f"{'scenario':<28}{'transport':>10}{'CPU ms per mail':>28}{'per call':>22}")
    names = ("new conversation (create)", "reply to filed mail", "reply reopening a record")
    for index, name in enumerate(names):
        for http in HTTPS:
            rows = [run[index] for run in cpu[http]]
            per_mail = [row["cpu_ms"] for row in rows]
            per_call = [row["cpu_ms"] / (row["ingest"] + row["map"] + row["file"]) for row in rows]
            print(
                f"{name:<28}{http:>10}{' / '.join(f'{v:.1f}' for v in per_mail):>28}"
                f"{' / '.join(f'{v:.2f}' for v in per_call):>22}"
            )


if __name__ == "__main__":
    main()
