"""Map throughput per core: the whole decision (parse, classify, reply text, decide) against
bare parsing of the same mail, as `mailfiler explain` runs it (no storage).

Three measures, one core, nothing asserted (issue 22's goal 4: explain's cost per mail flat
from 1,000 to 10,000 mails, and at most 2x bare parsing on realistic mail):

1. The corpora: every .eml and reply body under tests/data/corpora plus the sample mail (70%
   bounces, whose DSN reading dominates), explain against parse.
2. Realistic mail: the IMAP bench's generated mailbox (`bench_imap.mailbox_of`: 2-6 KB of
   prose, a third multipart with HTML, a quarter replies) at 1,000 and 10,000 mails. Each
   round parses every mail, then explains every mail in one `Simulation` (what an explain of
   that many files keeps); a round's time over its mails is the cost per mail, the best round
   of each is shown (the machine is shared: the best is the least disturbed). Times are this
   process's CPU time (time.process_time): what a mail costs, not how long other processes
   kept the core (the wall clock under a loaded machine varied 2x between runs).
3. The command: `run_explain --json` on the same mail written as a folder of .eml files and as
   a Maildir, output discarded: reading, the pass that lists Message-IDs, waiting, printing.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from shared.cli.explain import Simulation, explain_one, run_explain
from shared.core.config import Config
from shared.core.mime import parse_message
from shared.settings import load_config

from .bench_imap import mailbox_of

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("MAILFILER_CORPORA", REPO / "tests" / "data" / "corpora"))
SIZES = (1_000, 10_000)


def corpus() -> list[bytes]:
    files = sorted(CORPORA.rglob("*.eml")) + sorted((REPO / "samples" / "mail").glob("*.eml"))
    mails = [p.read_bytes() for p in files]
    for body in sorted((CORPORA / "replies" / "crisp").glob("*.txt")):
        mails.append(
            b"From: a@example.org\nSubject: Re: x\nMessage-ID: <"
            + body.name.encode()
            + b"@bench>\n\n"
            + body.read_bytes()
        )
    return mails


def parse_all(mails: list[bytes]) -> None:
    for raw in mails:
        parse_message(raw, mailbox="sample", source_id="b")


def explain_all(mails: list[bytes], config: Config) -> None:
    sim = Simulation()
    for i, raw in enumerate(mails):
        explain_one(str(i), raw, "sample", config, sim)


def best_of(rounds: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """The best time of each run over `rounds` rounds, the runs alternating within a round."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - start)
    return best


def corpora(config: Config, rounds: int) -> None:
    mails = corpus()
    parse_all(mails)  # warm
    explain_all(mails, config)
    timings = best_of(
        rounds,
        {"parse only": partial(parse_all, mails), "explain": partial(explain_all, mails, config)},
    )
    print(
        f"\nmap decision, corpora: {len(mails)} messages (70% bounces), CPU time, "
        f"best of {rounds} rounds"
    )
    print(f"{'':22}{'us/mail':>10}")
    for name, seconds in timings.items():
        print(f"{name:22}{seconds / len(mails) * 1e6:10.0f}")
    ratio = timings["explain"] / timings["parse only"]
    print(f"ratio explain/parse time: {ratio:.2f}x (goal <= 2)")


def write_eml(folder: Path, mails: list[bytes]) -> None:
    folder.mkdir()
    for i, raw in enumerate(mails):
        (folder / f"{i:06d}.eml").write_bytes(raw)


def write_maildir(folder: Path, mails: list[bytes]) -> None:
    for sub in ("new", "cur", "tmp"):
        (folder / sub).mkdir(parents=True)
    for i, raw in enumerate(mails):
        (folder / "cur" / f"1700000000.M{i}P1.bench:2,S").write_bytes(raw)


def command(paths: list[str], config: Config) -> None:
    sink = io.StringIO()
    if run_explain(paths, "sample", config, as_json=True, out=sink):
        raise RuntimeError(f"explain of {paths} failed")


def realistic(config: Config, rounds: int) -> None:
    rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            mails = mailbox_of(size, "support@mailfiler.example", seed=size)
            eml, maildir = Path(tmp) / f"eml-{size}", Path(tmp) / f"maildir-{size}"
            write_eml(eml, mails)
            write_maildir(maildir, mails)
            parse_all(mails[:200])  # warm
            explain_all(mails[:200], config)
            timings = best_of(
                rounds if size <= 1_000 else max(1, rounds - 1),
                {
                    "parse": partial(parse_all, mails),
                    "explain": partial(explain_all, mails, config),
                    "command, .eml": partial(command, [str(eml)], config),
                    "command, Maildir": partial(command, [str(maildir)], config),
                },
            )
            rows[size] = {name: seconds / size * 1e6 for name, seconds in timings.items()}
    print(
        f"\nmap decision, realistic mail (bench_imap's generated mailbox), CPU us per mail, "
        f"best of {rounds} rounds at {SIZES[0]:,} ({max(1, rounds - 1)} at {SIZES[1]:,})"
    )
    print(f"{'':34}" + "".join(f"{f'{s:,} mails':>14}" for s in SIZES) + f"{'10k/1k':>9}")
    names = ["parse", "explain", "command, .eml", "command, Maildir"]
    labels = {
        "parse": "bare parse",
        "explain": "explain (parse + map decision)",
        "command, .eml": "explain --json, .eml folder",
        "command, Maildir": "explain --json, Maildir",
    }
    small, big = SIZES
    for name in names:
        cells = "".join(f"{rows[s][name]:14.0f}" for s in SIZES)
        print(f"{labels[name]:34}{cells}{rows[big][name] / rows[small][name]:8.2f}x")
    ratios = "".join(f"{rows[s]['explain'] / rows[s]['parse']:13.2f}x" for s in SIZES)
    print(f"{'ratio explain / bare parse':34}{ratios}  (goal <= 2)")
    print(
        "flat: 10k/1k near 1 (goal 4); the command also reads each file twice (a first pass "
        "lists the Message-IDs so a message can wait for a later one) and prints JSON"
    )


def main() -> None:
    config = load_config(REPO / "samples" / "mailfiler.yaml")
    rounds = int(os.environ.get("MAILFILER_BENCH_ROUNDS", "3"))
    corpora(config, rounds)
    realistic(config, rounds)


if __name__ == "__main__":
    main()
