"""Peak memory of one big mail through ingest -> map -> file, on a private Azurite.

Each size runs in a fresh interpreter (peak RSS: VmHWM, Linux): the mail is a
text part and one base64 attachment (the shape of a big mail in practice), written to a
local-folder mailbox, ingested to Blob Storage and the `inbound` queue, mapped (parse, decide,
attachments to Blob Storage) and filed. The figure is the peak above the interpreter with
everything imported, beside the mail's size.

`python -m bench.bench_memory [--before REV] [SIZE_MB ...]`: with --before, the same run on the
code of a git revision (extracted to a temporary folder), side by side.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from shared.cli.azurite import Azurite

REPO = Path(__file__).resolve().parents[1]
SIZES_MB = (10, 50, 107)
STAGES = ("ingest", "map", "file")

# Runs in the child; uses only what every version of the pipeline has.
CHILD = r"""
import json, sys
from datetime import UTC, datetime
from pathlib import Path
from shared.core.config import parse_config
from shared.stages.file import file_plan
from shared.services.ingest import ingest_mailbox
from shared.stages.map import map_queued
from shared.sources.local import LocalSource
from shared.store.account import StorageSettings
from shared.store.stores import FILING, INBOUND, Stores

def hwm():
    # The peak RSS of this process image (kB). Not ru_maxrss: Linux carries that over exec
    # from the parent, so a child would report its parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")

connection, folder = sys.argv[1], Path(sys.argv[2])
stores = Stores.connect(StorageSettings(connection_string=connection))
stores.ensure()
config = parse_config(
    "record_types: [{name: case, prefix: CASE}]\n"
    f"mailboxes: [{{name: bench, kind: local, path: {folder}, record_type: case}}]\n"
)
now = datetime.now(UTC)
base = hwm()
peaks = {}
ingest_mailbox(stores, "bench", LocalSource(folder), now=now)
peaks["ingest"] = hwm()
(inbound,) = stores.queues.receive(INBOUND, max_messages=1, visibility_timeout=600)
plans = map_queued(stores, config, inbound.body, now=now)
peaks["map"] = hwm()
for message in stores.queues.receive(FILING, max_messages=32, visibility_timeout=600):
    file_plan(stores, config, message.body, now=now, source_for=lambda name: None)
peaks["file"] = hwm()
print(json.dumps({"base_kb": base, **{k: v for k, v in peaks.items()}, "plans": len(plans)}))
"""


def write_mail(folder: Path, size_mb: int) -> int:
    """A mail of about `size_mb` MB (10**6 bytes) with one base64 attachment; its size."""
    attachment = os.urandom(size_mb * 1_000_000 * 3 // 4 - 4000)
    body = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    head = (
        f"Message-ID: <bench-{size_mb}@bench.example>\r\n"
        "From: Ёлка Пример <yolka@bench.example>\r\nTo: support@mailfiler.example\r\n"
        f"Subject: {size_mb} MB test: отчёт 報告\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe report is attached.\r\n"
        '--b\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
        'Content-Disposition: attachment; filename="report.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    raw = head + body + b"\r\n--b--\r\n"
    (folder / "big.eml").write_bytes(raw)
    return len(raw)


def code_of(rev: str, target: Path) -> Path:
    """The tree of `rev` (shared/ only) extracted under `target`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "shared"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def measure(code: Path, connection: str, size_mb: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        size = write_mail(folder, size_mb)
        env = {**os.environ, "PYTHONPATH": str(code)}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, connection, str(folder)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=code,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    base = result["base_kb"] / 1024
    peak = max(result[k] for k in STAGES) / 1024
    # The peak so far after each stage: a stage that raised it is the one that cost it.
    stages = {k: result[k] / 1024 - base for k in STAGES}
    return {"size": size / 2**20, "base": base, "peak": peak, "over": peak - base, **stages}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_memory")
    parser.add_argument("--before", help="a git revision to measure side by side")
    parser.add_argument("sizes", nargs="*", type=int, default=list(SIZES_MB))
    args = parser.parse_args(argv)
    azurite = Azurite()
    azurite.start()
    rows: list[tuple[int, dict[str, float], dict[str, float] | None]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            before = code_of(args.before, Path(tmp)) if args.before else None
            for size_mb in args.sizes:
                after = measure(REPO, azurite.connection_string, size_mb)
                old = measure(before, azurite.connection_string, size_mb) if before else None
                rows.append((size_mb, after, old))
    finally:
        azurite.stop()
    print("\npeak memory of one mail through ingest -> map -> file (RSS above the idle process)")
    head = f"{'mail':>8}{'MiB':>8}{'after ingest':>13}{'map':>6}{'file':>6}{'x size':>8}"
    print(head + (f"{'before':>9}{'x size':>8}" if args.before else ""))
    for size_mb, after, old in rows:
        line = (
            f"{size_mb:>6}MB{after['size']:>8.1f}{after['ingest']:>13.0f}{after['map']:>6.0f}"
            f"{after['file']:>6.0f}{after['over'] / after['size']:>8.2f}"
        )
        if old is not None:
            line += f"{old['over']:>9.0f}{old['over'] / old['size']:>8.2f}"
        print(line)
    print("MiB above the idle process after each stage (peak so far); x size: the peak / mail")
    print(f"idle process: {rows[0][1]['base']:.0f} MiB" if rows else "")


if __name__ == "__main__":
    main(sys.argv[1:])
