"""C-STORE throughput and server CPU per image: micropacs serve against DCMTK's
storescp and Debian's Orthanc 1.10, same data, same run.

1,000 CT instances (512×512, 16-bit) sent by one storescu association and by
four at once (each sends a quarter), to each server in turn. Figures: images/s,
the ratio to storescp and to Orthanc, and the server's CPU seconds per image
(user + system of every process of the server, from /proc): for micropacs
counted until its index has applied every instance, so ingest and index
together.

    python -m bench.store_throughput [--count 1000] [--associations 1 4] [--no-workers]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import DCMTK_ENV, cpu_seconds, free_port, save, start_serve, stop, wait_port
from bench.orthanc import Orthanc
from tests import dicomdata


def send(port: int, ae: str, files: list[Path], associations: int) -> float:
    """Seconds for ``associations`` storescu processes to send ``files`` between them."""
    chunks = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            ["storescu", "-aec", ae, "127.0.0.1", str(port), *map(str, chunk)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for sender in senders:
        _, err = sender.communicate()
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-2000:]}")
    return time.perf_counter() - started


def measured(
    pid: int, files: list[Path], seconds: Callable[[], float], settled: Callable[[], None]
) -> dict[str, float]:
    """Images/s of one send and the server's CPU per image, once ``settled`` returns."""
    before = cpu_seconds(pid)
    elapsed = seconds()
    settled()
    spent = cpu_seconds(pid) - before
    return {
        "images_per_s": round(len(files) / elapsed, 1),
        "cpu_ms_per_image": round(spent / len(files) * 1000, 2),
    }


def storescp(files: list[Path], associations: int, work: Path) -> dict[str, float]:
    out = work / f"storescp-{associations}"
    out.mkdir()
    port = free_port()
    scp = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        return measured(
            scp.pid, files, lambda: send(port, "STORESCP", files, associations), lambda: None
        )
    finally:
        scp.terminate()
        scp.wait()
        shutil.rmtree(out)


def orthanc(files: list[Path], associations: int, work: Path) -> dict[str, float]:
    # Orthanc 1.10 speaks DICOM through DCMTK, which waits for delayed ACKs without it.
    server = Orthanc(work / f"orthanc-{associations}", env=DCMTK_ENV)
    try:
        return measured(
            server.process.pid,
            files,
            lambda: send(server.dicom_port, "ORTHANC", files, associations),
            lambda: None,  # Orthanc indexes before it answers
        )
    finally:
        server.stop()


def indexed(catalog: Path, count: int, timeout: float = 300) -> None:
    """Wait until micropacs' catalog holds ``count`` instances."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=10) as db:
                if int(db.execute("SELECT count(*) FROM instances").fetchone()[0]) >= count:
                    return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the index did not apply {count} instances in {timeout} s")


def micropacs(
    files: list[Path], associations: int, work: Path, env: dict[str, str] | None = None
) -> dict[str, float]:
    data = work / f"micropacs-{associations}-{len(env or {})}" / "data"
    data.mkdir(parents=True)
    port = free_port()
    server = start_serve(data, port, free_port(), env)
    try:
        return measured(
            server.pid,
            files,
            lambda: send(port, "MICROPACS", files, associations),
            lambda: indexed(data / "catalog.db", len(files)),
        )
    finally:
        stop(server)
        shutil.rmtree(data.parent)


def compare(files: list[Path], associations: Sequence[int], work: Path, workers: bool) -> Any:
    result: dict[str, Any] = {}
    for count in associations:
        print(f"{count} association(s): storescp …", flush=True)
        row: dict[str, Any] = {"storescp": storescp(files, count, work)}
        print(f"{count} association(s): Orthanc …", flush=True)
        row["orthanc"] = orthanc(files, count, work)
        print(f"{count} association(s): micropacs serve …", flush=True)
        row["micropacs"] = micropacs(files, count, work)
        if workers:
            print(f"{count} association(s): micropacs serve --workers 4 …", flush=True)
            row["micropacs_4_workers"] = micropacs(
                files, count, work, {"MICROPACS_DICOM__WORKERS": "4"}
            )
        peer, other = row["storescp"]["images_per_s"], row["orthanc"]["images_per_s"]
        for name in ("micropacs", "micropacs_4_workers"):
            if name in row:
                rate = row[name]["images_per_s"]
                row[name]["ratio_to_storescp"] = round(rate / peer, 3)
                row[name]["ratio_to_orthanc"] = round(rate / other, 3)
        row["orthanc"]["ratio_to_storescp"] = round(other / peer, 3)
        result[f"{count}_assoc"] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--no-workers", action="store_true", help="skip serve --workers 4")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        work = Path(tmp)
        print(f"generating {args.count} CT instances …", flush=True)
        files = dicomdata.make_ct_series(work / "ct", args.count, rows=512, cols=512)
        result: dict[str, Any] = {"instances": args.count, "image": "CT 512x512 16-bit"}
        result.update(compare(files, args.associations, work, not args.no_workers))
        save("store_throughput", result)


if __name__ == "__main__":
    main()
