"""The receive path alone: what a Storage SCP costs per image before micropacs' own
work, pynetdicom's threaded reactors against an event-driven asyncio receiver.

The same 1,000 CT 512×512 sent by storescu (one association, then four) to:
storescp (no fsync); a bare pynetdicom SCP that fsyncs and renames each object
(``bench.pynetdicom_receiver``), with pynetdicom's polling reactors and with
``micropacs.dimse.wakeups``; a minimal asyncio receiver doing the same
(``bench.asyncio_receiver``); then, to see the receive path inside the whole
store, ``micropacs run ingest`` (pynetdicom, wakeups, StoreService on the
embedded stores, no index) against the asyncio receiver calling the same
StoreService. Images/s, ratio to storescp, server CPU ms per image.

    python -m bench.receive_path [--count 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import DCMTK_ENV, cpu_seconds, free_port, save, wait_port
from bench.store_throughput import send
from tests import dicomdata

AE_TITLE = "RECEIVER"


def servers(port: int, folder: Path) -> dict[str, list[str]]:
    python = [sys.executable, "-m"]
    where = [str(port), str(folder)]
    return {
        "storescp": ["storescp", "-aet", AE_TITLE, "-od", str(folder), str(port)],
        "pynetdicom": [*python, "bench.pynetdicom_receiver", *where],
        "pynetdicom_wakeups": [*python, "bench.pynetdicom_receiver", *where, "--wakeups"],
        "asyncio": [*python, "bench.asyncio_receiver", *where],
        "micropacs_run_ingest": [
            *python,
            "micropacs",
            "run",
            "ingest",
            "--data-dir",
            str(folder),
            "--dicom-port",
            str(port),
            "--http-port",
            "0",
            "--ae-title",
            AE_TITLE,
        ],
        "asyncio_store_service": [*python, "bench.asyncio_receiver", *where, "--store-service"],
    }


def measure(name: str, files: list[Path], work: Path) -> dict[str, Any]:
    folder = work / name
    folder.mkdir()
    port = free_port()
    env = {**DCMTK_ENV, "MICROPACS_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        servers(port, folder)[name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        result: dict[str, Any] = {}
        for associations in (1, 4):
            before = cpu_seconds(server.pid)
            seconds = send(port, AE_TITLE, files, associations)
            result[f"{associations}_assoc"] = {
                "images_per_s": round(len(files) / seconds, 1),
                "cpu_ms_per_image": round(
                    (cpu_seconds(server.pid) - before) / len(files) * 1000, 2
                ),
            }
        return result
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as tmp:
        work = Path(tmp)
        print(f"generating {args.count} CT instances …", flush=True)
        files = dicomdata.make_ct_series(work / "ct", args.count, rows=512, cols=512)
        result: dict[str, Any] = {"instances": args.count, "cpus": os.cpu_count()}
        for name in servers(0, work):
            print(f"{name} …", flush=True)
            result[name] = measure(name, files, work)
        for name, rows in result.items():
            if isinstance(rows, dict) and name != "storescp":
                for key, row in rows.items():
                    peer = result["storescp"][key]["images_per_s"]
                    row["ratio_to_storescp"] = round(row["images_per_s"] / peer, 3)
        save("receive_path", result)


if __name__ == "__main__":
    main()
