"""Peak RSS of ``micropacs serve`` while it receives one 1 GB multi-frame object.

The server receives C-STORE datasets to disk in chunks, so its memory must not
grow with the object. Target: under 300 MB.

    python -m bench.peak_rss [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.common import DCMTK_ENV, free_port, rss_bytes, save, start_serve, stop
from tests import dicomdata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        work = Path(tmp)
        print(f"generating a {args.size_mb} MB multi-frame object …", flush=True)
        big = dicomdata.make_large_multiframe(work / "big.dcm", args.size_mb * 1024 * 1024)
        data = work / "data"
        data.mkdir()
        port = free_port()
        server = start_serve(data, port, free_port())
        baseline = rss_bytes(server.pid)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes(server.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        try:
            subprocess.run(
                ["storescu", "-aec", "MICROPACS", "127.0.0.1", str(port), str(big)],
                env=DCMTK_ENV,
                check=True,
                capture_output=True,
            )
            seconds = time.perf_counter() - started
        finally:
            done.set()
            sampler.join()
            stop(server)
        save(
            "peak_rss",
            {
                "object_mb": args.size_mb,
                "idle_rss_mb": round(baseline / 2**20, 1),
                "peak_rss_mb": round(peak / 2**20, 1),
                "receive_seconds": round(seconds, 2),
                "target_mb": 300,
            },
        )


if __name__ == "__main__":
    main()
