"""`make bench`: every benchmark, printed side by side."""

from __future__ import annotations

from . import bench_parse, bench_storage

bench_parse.main()
bench_storage.main()
