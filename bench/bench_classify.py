"""Classifier benchmark: `classify` on the pre-parsed corpus (parsing is not timed).

Run with ``python -m bench.bench_classify``. Corpus: every .eml under the shared corpora
(override with ``MAILFILER_CORPORA``); rounds with ``MAILFILER_BENCH_ROUNDS`` (default 3).
Bounces cost more than the rest: their delivery status re-parses the raw mail.
"""

from __future__ import annotations

import os
import time
from collections import Counter

from shared.core.classify import classify
from shared.core.message import MailMessage
from shared.core.mime import parse_message

from . import bench_parse


def load_corpus() -> list[MailMessage]:
    return [
        parse_message(raw, mailbox="bench", source_id=str(i))
        for i, raw in enumerate(bench_parse.load_corpus())
    ]


def timed(messages: list[MailMessage], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for message in messages:
            classify(message)
    return time.perf_counter() - start


def main() -> None:
    corpus = load_corpus()
    if not corpus:
        print("no .eml files found; set MAILFILER_CORPORA")
        return
    rounds = int(os.environ.get("MAILFILER_BENCH_ROUNDS", "3"))
    kinds = Counter(classify(m).kind for m in corpus)  # also warms caches
    bounces = [m for m in corpus if classify(m).kind == "bounce"]
    others = [m for m in corpus if classify(m).kind != "bounce"]
    print(f"classify: {len(corpus)} corpus messages, {rounds} rounds, one core: {dict(kinds)}")
    print(f"{'':20}{'msgs/s':>10}{'seconds':>10}")
    for name, group in (("all", corpus), ("bounces", bounces), ("others", others)):
        if group:
            seconds = timed(group, rounds)
            print(f"{name:20}{len(group) * rounds / seconds:>10.0f}{seconds:>10.3f}")


if __name__ == "__main__":
    main()
