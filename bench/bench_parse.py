"""Parse benchmark: our `parse_message` against a bare stdlib parse of the same corpus.

Run with ``python -m bench.bench_parse``. Corpus: every .eml under tests/data/corpora (override
with ``MAILFILER_CORPORA``); rounds with ``MAILFILER_BENCH_ROUNDS`` (default 3). Peak memory
is measured in a separate pass under tracemalloc, since tracing slows the timed runs.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path

from shared.core.mime import parse_message

DEFAULT_CORPORA = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpora"


def load_corpus() -> list[bytes]:
    root = Path(os.environ.get("MAILFILER_CORPORA", DEFAULT_CORPORA))
    return [path.read_bytes() for path in sorted(root.rglob("*.eml"))]


def ours(raw: bytes) -> object:
    return parse_message(raw, mailbox="bench", source_id="bench")


def stdlib(raw: bytes) -> object:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    try:
        return message["subject"]  # header objects are built lazily: touch one
    except Exception:  # the stdlib raises on some real mail; count it as parsed
        return None


def stdlib_compat32(raw: bytes) -> object:
    """The structure alone, as our parser starts: the fastest the stdlib gets."""
    return BytesParser(policy=policy.compat32).parsebytes(raw)["subject"]


def timed(parse: Callable[[bytes], object], corpus: list[bytes], rounds: int) -> float:
    """Seconds to parse the corpus `rounds` times. Stdlib parse errors count as parsed."""
    start = time.perf_counter()
    for _ in range(rounds):
        for raw in corpus:
            try:
                parse(raw)
            except Exception:  # the stdlib crashes on some corpus mail; count it as parsed
                continue
    return time.perf_counter() - start


def peak_bytes(parse: Callable[[bytes], object], corpus: list[bytes]) -> int:
    tracemalloc.start()
    try:
        timed(parse, corpus, 1)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    corpus = load_corpus()
    if not corpus:
        print("no .eml files found; set MAILFILER_CORPORA")
        return
    rounds = int(os.environ.get("MAILFILER_BENCH_ROUNDS", "3"))
    sides = {"ours": ours, "stdlib": stdlib, "compat32": stdlib_compat32}
    for parse in sides.values():
        timed(parse, corpus, 1)  # warm imports and caches
    seconds = {name: timed(parse, corpus, rounds) for name, parse in sides.items()}
    peaks = {name: peak_bytes(parse, corpus) for name, parse in sides.items()}
    count = len(corpus) * rounds
    megabytes = sum(map(len, corpus)) / 1e6
    print(f"parse: {len(corpus)} corpus messages, {megabytes:.1f} MB, {rounds} rounds, one core")
    print(f"{'':34}{'msgs/s':>10}{'seconds':>10}{'peak MiB':>10}")
    labels = {
        "ours": "parse_message (full MailMessage)",
        "stdlib": "BytesParser(policy.default)",
        "compat32": "BytesParser(compat32), tree only",
    }
    for name, label in labels.items():
        print(
            f"{label:34}{count / seconds[name]:10.0f}{seconds[name]:10.2f}"
            f"{peaks[name] / 2**20:10.1f}"
        )
    print(
        f"ratio ours/stdlib time: {seconds['ours'] / seconds['stdlib']:.2f}x "
        f"(against the bare compat32 tree: {seconds['ours'] / seconds['compat32']:.2f}x)"
    )


if __name__ == "__main__":
    main()
