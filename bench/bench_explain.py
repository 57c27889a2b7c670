"""Map throughput per core: the whole decision (parse, classify, reply text, decide) against
bare parsing of the same mail, as `mailfiler explain` runs it (no storage).

Corpus: every .eml and reply body under tests/data/corpora plus the sample mail. The issue's
goal: explain/map at most 2x the time of parsing alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shared.cli.explain import Simulation, explain_one
from shared.core.mime import parse_message
from shared.settings import load_config

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("MAILFILER_CORPORA", REPO / "tests" / "data" / "corpora"))


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


def main() -> None:
    mails = corpus()
    config = load_config(REPO / "samples" / "mailfiler.yaml")
    rounds = int(os.environ.get("MAILFILER_BENCH_ROUNDS", "3"))

    def parse_all() -> None:
        for raw in mails:
            parse_message(raw, mailbox="sample", source_id="b")

    def explain_all() -> None:
        sim = Simulation()
        for i, raw in enumerate(mails):
            explain_one(str(i), raw, "sample", config, sim)

    timings = {}
    for name, run in (("parse only", parse_all), ("explain (full map)", explain_all)):
        run()  # warm
        start = time.perf_counter()
        for _ in range(rounds):
            run()
        timings[name] = time.perf_counter() - start
    count = len(mails) * rounds
    print(f"\nmap decision: {len(mails)} messages, {rounds} rounds, one core")
    print(f"{'':22}{'msgs/s':>10}{'seconds':>10}")
    for name, seconds in timings.items():
        print(f"{name:22}{count / seconds:10.0f}{seconds:10.2f}")
    ratio = timings["explain (full map)"] / timings["parse only"]
    print(f"ratio explain/parse time: {ratio:.2f}x (goal <= 2)")


if __name__ == "__main__":
    main()
