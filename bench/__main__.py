"""`make bench`: every benchmark, printed side by side."""

from __future__ import annotations

from . import (
    bench_addresses,
    bench_classify,
    bench_console,
    bench_ews,
    bench_explain,
    bench_graph,
    bench_imap,
    bench_memory,
    bench_parse,
    bench_reply,
    bench_storage,
)

bench_parse.main()
bench_classify.main()
bench_reply.main()
bench_addresses.main()
bench_explain.main()
bench_storage.main()
bench_memory.main([])
bench_graph.main()
bench_imap.main()
bench_ews.main()
bench_console.main()
