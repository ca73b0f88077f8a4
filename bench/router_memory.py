"""The router's memory with a dead destination's queue of 1,000 and of 100,000 entries.

The queue lives in the catalog and a sender holds one batch, so the router's RSS must not
grow with the queue's length (docs/routing.md). Each run fills the SQLite catalog of a
fresh data directory with ``N`` entries for a registered node nobody listens for, starts
``micropacs run router`` on it, lets it fail and back off for a while and samples its RSS.

    python -m bench.router_memory [--entries 1000 100000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port, rss_bytes, save, stop, wait_port
from micropacs.adapters.sqlite_catalog import SqliteCatalog
from micropacs.ports import ForwardEntry, Node

DESTINATION = "DEAD"


async def fill(data_dir: Path, entries: int, dead_port: int) -> None:
    catalog = SqliteCatalog(data_dir / "catalog.db")
    await catalog.open()
    try:
        await catalog.put_node(Node(DESTINATION, "127.0.0.1", dead_port))
        now = time.time()
        for start in range(0, entries, 10_000):
            await catalog.enqueue_forwards(
                [
                    ForwardEntry(
                        entry_id=f"e{n:08d}",
                        destination=DESTINATION,
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        sop_instance_uid=f"1.2.826.0.1.3680043.10.543.{n}",
                        series_instance_uid="1.2.826.0.1.3680043.10.543.1",
                        study_instance_uid="1.2.826.0.1.3680043.10.543.2",
                        object_key=f"bench/{n}",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        enqueued_at=now,
                    )
                    for n in range(start, min(start + 10_000, entries))
                ]
            )
    finally:
        await catalog.close()


def measure(entries: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        asyncio.run(fill(data_dir, entries, free_port()))
        http_port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "micropacs",
                "run",
                "router",
                "--data-dir",
                str(data_dir),
                "--dicom-port",
                "0",
                "--http-port",
                str(http_port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("MICROPACS_")},
                "MICROPACS_LOG_LEVEL": "WARNING",
                # Fail often, so the queue is read again and again while we watch.
                "MICROPACS_ROUTER__BACKOFF_INITIAL": "0.1",
                "MICROPACS_ROUTER__BACKOFF_MAX": "0.5",
                "MICROPACS_ROUTER__STATS_INTERVAL": "0.5",
                "MICROPACS_ROUTER__MAX_ATTEMPTS": "1000000",
            },
            start_new_session=True,
        )
        try:
            wait_port(http_port)
            peak = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                peak = max(peak, rss_bytes(process.pid))
                time.sleep(0.1)
        finally:
            stop(process)
    return {"entries": entries, "peak_rss_mb": round(peak / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    runs = [measure(n, args.seconds) for n in args.entries]
    for run in runs:
        print(f"{run['entries']:>7} entries queued for a dead destination: {run['peak_rss_mb']} MB")
    save("router_memory", {"runs": runs, "seconds": args.seconds})


if __name__ == "__main__":
    main()
