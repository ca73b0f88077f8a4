"""``python -m bench``: every benchmark in turn; results land in bench/results/."""

from __future__ import annotations

import subprocess
import sys

for module in ("bench.store_throughput", "bench.peak_rss", "bench.find_latency", "bench.worklist"):
    print(f"== {module}", flush=True)
    subprocess.run([sys.executable, "-m", module], check=True)
