"""Forwarding through the router against storing to the destination directly.

A DCMTK storescp is the destination. First storescu sends the 1,000 CT 512×512 to it
directly (one association): the direct rate. Then ``micropacs serve`` with a rules file that
forwards everything to it (registered as a node) receives the same files while the
destination is down, so they wait in its queue; once storescp is started the router drains
the queue once serve has queued every entry and indexed every instance (so that the drain
is measured alone): the forwarding rate is (files - 1) over the time from the first file's arrival
to the last's (their modification times, as storescp finished writing them: nothing else
runs beside the router and storescp while it drains, as nothing runs beside storescu and
storescp for the direct rate), the ratio is that over the direct rate. Last, 200
instances are sent to serve by a pynetdicom association at the pace of a modality
(``--pace`` per second) with the destination up: the extra latency is each instance's
arrival at storescp (seen by polling its folder every 2 ms) after serve's C-STORE
response.

    python -m bench.forwarding [--count 1000] [--latency-count 200] [--pace 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, evt

from bench.common import (
    DCMTK_ENV,
    cpu_seconds,
    free_port,
    percentile,
    rss_bytes,
    save,
    start_serve,
    stop,
    wait_port,
)
from bench.store_throughput import send
from micropacs.dimse.sockets import set_nodelay
from tests import dicomdata

RULES = """
rules:
  - name: everything
    forward:
      - destination: DEST
"""


class Arrivals:
    """When each file first appeared in storescp's folder (``-uf``: named by its UID)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._done.is_set():
            now = time.monotonic()
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    if entry.name not in self.seen and not entry.name.startswith("."):
                        self.seen[entry.name] = now
            time.sleep(0.002)

    def wait(self, count: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.seen)} of {count} forwarded in {timeout} s")
            time.sleep(0.05)


def written(folder: Path, count: int, timeout: float = 600) -> list[float]:
    """Once ``count`` files are in ``folder``, when each was last written (sorted); looks
    twice a second, so the looking costs the machine nothing measurable."""
    deadline = time.monotonic() + timeout
    while True:
        with os.scandir(folder) as entries:
            files = [entry for entry in entries if not entry.name.startswith(".")]
        if len(files) >= count:
            time.sleep(0.5)  # the last file's writes finished
            return sorted(entry.stat().st_mtime_ns / 1e9 for entry in files)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(files)} of {count} forwarded in {timeout} s")
        time.sleep(0.5)


def storescp(port: int, folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(exist_ok=True)
    process = subprocess.Popen(
        ["storescp", "-aet", "DEST", "-uf", "-od", str(folder), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return process


def cli(data: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "micropacs", *args, "--data-dir", str(data)],
        env=env,
        capture_output=True,
        check=True,
    )


def direct(files: list[Path], work: Path) -> float:
    port = free_port()
    scp = storescp(port, work / "direct")
    try:
        return len(files) / send(port, "DEST", files, 1)
    finally:
        stop(scp)


def drained(files: list[Path], work: Path, env: dict[str, str]) -> dict[str, Any]:
    data = work / "drain-data"
    data.mkdir()
    dest_port = free_port()
    cli(data, env, "nodes", "add", "DEST", "127.0.0.1", str(dest_port))
    port, http_port = free_port(), free_port()
    server = start_serve(data, port, http_port, env=env)
    try:
        send(port, "MICROPACS", files, 1)  # the destination is down: all of it queues
        # The drain alone: every entry queued and the index caught up before it starts.
        settle(http_port, len(files))
        folder = work / "drained"
        folder.mkdir()
        idle_rss = rss_bytes(server.pid)
        cpu_before = cpu_seconds(server.pid)
        scp = storescp(dest_port, folder)
        try:
            times = written(folder, len(files))
            cpu = cpu_seconds(server.pid) - cpu_before
        finally:
            stop(scp)
        rate = (len(times) - 1) / (times[-1] - times[0])
        return {
            "images_per_s": round(rate, 1),
            "serve_cpu_ms_per_image": round(cpu * 1000 / len(files), 2),
            "serve_rss_mb": round(idle_rss / 2**20, 1),
        }
    finally:
        stop(server)


def counter(metrics: str, name: str) -> float:
    """The sum of a counter's samples in a /metrics answer."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def settle(http_port: int, count: int, timeout: float = 300) -> None:
    """Until serve's router has queued ``count`` entries and its index applied as many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as got:
            metrics = got.read().decode()
        queued = counter(metrics, "micropacs_router_queued_total")
        indexed = counter(metrics, "micropacs_index_upserts_total")
        if queued >= count and indexed >= count:
            return
        time.sleep(0.2)
    raise SystemExit(f"serve did not queue and index {count} instances in {timeout:.0f} s")


def latency(work: Path, env: dict[str, str], count: int, pace: float) -> dict[str, Any]:
    files = dicomdata.make_ct_series(work / "paced", count, rows=512, cols=512)
    data = work / "latency-data"
    data.mkdir()
    dest_port, port = free_port(), free_port()
    cli(data, env, "nodes", "add", "DEST", "127.0.0.1", str(dest_port))
    folder = work / "latency"
    scp = storescp(dest_port, folder)
    server = start_serve(data, port, free_port(), env=env)
    answered: dict[str, float] = {}
    try:
        ae = AE(ae_title="MODALITY")
        datasets = [dcmread(path) for path in files]
        for context in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}:
            ae.add_requested_context(context[0], context[1])
        with Arrivals(folder) as arrivals:
            # pynetdicom leaves Nagle on: without this each C-STORE waits for a delayed ACK.
            assoc = ae.associate(
                "127.0.0.1",
                port,
                ae_title="MICROPACS",
                evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)],
            )
            if not assoc.is_established:
                raise RuntimeError("no association with micropacs")
            try:
                started = time.monotonic()
                for n, ds in enumerate(datasets):
                    time.sleep(max(0.0, started + n / pace - time.monotonic()))
                    status = assoc.send_c_store(ds)
                    if getattr(status, "Status", None) != 0:
                        raise RuntimeError(f"C-STORE answered {status}")
                    answered[str(ds.SOPInstanceUID)] = time.monotonic()
            finally:
                assoc.release()
            arrivals.wait(count)
        # storescp names a file MODALITY.UID ("CT.1.2.…").
        arrived = {name.split(".", 1)[1]: at for name, at in arrivals.seen.items()}
        extra = [arrived[uid] - at for uid, at in answered.items()]
    finally:
        stop(server)
        stop(scp)
    return {
        "instances": count,
        "pace_per_s": pace,
        "extra_ms_p50": round(percentile(extra, 50) * 1000, 1),
        "extra_ms_p95": round(percentile(extra, 95) * 1000, 1),
        "extra_ms_max": round(max(extra) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--latency-count", type=int, default=200)
    parser.add_argument("--pace", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as tmp:
        work = Path(tmp)
        rules = work / "rules.yaml"
        rules.write_text(RULES)
        env = {
            **os.environ,
            "MICROPACS_ROUTER__RULES_FILE": str(rules),
            "MICROPACS_ROUTER__BACKOFF_INITIAL": "0.2",
            "MICROPACS_ROUTER__BACKOFF_MAX": "1",
            # Retried every second while the destination is down (for as long as serve
            # takes to receive the files), never dead-lettered.
            "MICROPACS_ROUTER__MAX_ATTEMPTS": "100000",
        }
        print(f"generating {args.count} CT 512x512 …", flush=True)
        files = dicomdata.make_ct_series(work / "ct", args.count, rows=512, cols=512)
        rate = direct(files, work)
        forwarded = drained(files, work, env)
        result = {
            "count": args.count,
            "direct_storescu_images_per_s": round(rate, 1),
            "forwarded_from_queue": forwarded,
            "ratio_to_direct": round(forwarded["images_per_s"] / rate, 2),
            "latency": latency(work, env, args.latency_count, args.pace),
            "target_ratio": 0.8,
        }
        save("forwarding", result)


if __name__ == "__main__":
    main()
