"""Classifier benchmark: `classify` on the pre-parsed corpus (parsing is not timed).

Run with ``python -m bench.bench_classify``. Corpus: every .eml under tests/data/corpora
(override with ``MAILFILER_CORPORA``); rounds with ``MAILFILER_BENCH_ROUNDS`` (default 3).
Bounces cost more than the rest: their delivery status re-parses the raw mail.

It first prints the corpus table: per source of machine mail, how much is not classified
human and how much gets exactly the class its README gives, and how many human replies come
out as anything but human (the expectations are the corpus test's, tests/core/).
"""

from __future__ import annotations

import csv
import os
import time
from collections import Counter
from pathlib import Path

from shared.core.classify import classify
from shared.core.message import MailMessage
from shared.core.mime import parse_message
from tests.core.test_classify_corpus import BOUNCES, REPLIES, classify_file, expected_kind

from . import bench_parse

FORMS = Path(__file__).resolve().parents[1] / "tests" / "data" / "dsn_forms"


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


def corpus_table() -> None:
    """Machine mail not human, exact class and human false positives, per corpus source."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for path in BOUNCES:
        pair = (expected_kind(path), classify_file(path).kind)
        groups.setdefault(path.parent.name, []).append(pair)
    # The non-RFC delay/failure forms written for this project (not real-world mail).
    with (FORMS / "expected.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            pair = (row["kind"], classify_file(FORMS / row["file"]).kind)
            groups.setdefault("dsn_forms (ours)", []).append(pair)
    print("classify on the corpora (tests/data/corpora):")
    print(f"{'source':18}{'mails':>7}{'machine not human':>20}{'exact class':>14}")
    for source, pairs in sorted(groups.items()):
        machine = [got for want, got in pairs if want != "human"]
        not_human = sum(1 for got in machine if got != "human")
        exact = sum(1 for want, got in pairs if want == got)
        print(
            f"{source:18}{len(pairs):>7}{not_human:>13} of {len(machine):<4}"
            f"{exact:>7} of {len(pairs):<4}"
        )
    replies = [classify_file(p).kind for p in REPLIES]
    wrong = sum(1 for kind in replies if kind != "human")
    print(f"human replies (talon, crisp) classified anything but human: {wrong} of {len(replies)}")


def main() -> None:
    corpus_table()
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
