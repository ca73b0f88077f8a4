"""``python -m bench``: every benchmark that needs no stack, in turn; results land in
bench/results/. The stack's (``stack_pipeline``, ``read_barrier``, ``kafka_offsets``) run
on their own after ``make stack``."""

from __future__ import annotations

import subprocess
import sys

MODULES = (
    "bench.store_throughput",
    "bench.receive_path",
    "bench.header_cost",
    "bench.coercion_cost",
    "bench.peak_rss",
    "bench.find_latency",
    "bench.find_encoding",
    "bench.dicomweb",
    "bench.retrieve",
    "bench.worklist",
    "bench.forwarding",
    "bench.router_memory",
    "bench.admin_pages",
)

for module in MODULES:
    print(f"== {module}", flush=True)
    subprocess.run([sys.executable, "-m", module], check=True)
