"""Peak RSS of ``micropacs serve`` receiving one 1 GB object and serving a 2 GB study.

The server receives C-STORE datasets to disk in chunks and streams WADO-RS
responses part by part, so its memory must grow with neither. Target: under
150 MB in both.

    python -m bench.peak_rss [--size-mb 1024] [--study-mb 2048]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import DCMTK_ENV, free_port, rss_bytes, save, start_serve, stop
from tests import dicomdata

RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"'
STUDY_OBJECTS = 4
TARGET_MB = 150


@contextmanager
def sampled(pid: int) -> Iterator[Callable[[], int]]:
    """The peak RSS of ``pid`` while the block runs, sampled every 50 ms."""
    peak = rss_bytes(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield lambda: peak
    finally:
        done.set()
        sampler.join()


def store(port: int, paths: list[Path]) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["storescu", "-aec", "MICROPACS", "127.0.0.1", str(port), *map(str, paths)],
        env=DCMTK_ENV,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def wait_indexed(http_port: int, study: str, count: int) -> None:
    import httpx

    url = f"http://127.0.0.1:{http_port}/dicom-web/studies/{study}/instances"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = httpx.get(url, headers={"Accept": "application/dicom+json"})
        if response.status_code == 200 and len(response.json()) == count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the {count} objects of the study were not indexed within 120 s")


def receiving(work: Path, size_mb: int) -> dict[str, float]:
    print(f"generating a {size_mb} MB multi-frame object …", flush=True)
    big = dicomdata.make_large_multiframe(work / "big.dcm", size_mb * 2**20)
    data = work / "receive-data"
    data.mkdir()
    port = free_port()
    server = start_serve(data, port, free_port())
    baseline = rss_bytes(server.pid)
    try:
        with sampled(server.pid) as peak:
            seconds = store(port, [big])
    finally:
        stop(server)
    big.unlink()
    return {
        "object_mb": size_mb,
        "idle_rss_mb": round(baseline / 2**20, 1),
        "peak_rss_mb": round(peak() / 2**20, 1),
        "receive_seconds": round(seconds, 2),
    }


def large_study(work: Path, study_mb: int) -> tuple[dicomdata.StudySpec, list[Path]]:
    """A study of ``study_mb`` MB in :data:`STUDY_OBJECTS` multi-frame files under ``work``."""
    print(f"generating a {study_mb} MB study of {STUDY_OBJECTS} objects …", flush=True)
    study = dicomdata.StudySpec()
    series = dicomdata.SeriesSpec()
    each = study_mb * 2**20 // STUDY_OBJECTS
    paths = [
        dicomdata.make_large_multiframe(
            work / f"part{n}.dcm", each, study=study, series=series, seed=n
        )
        for n in range(STUDY_OBJECTS)
    ]
    return study, paths


def serving(work: Path, study_mb: int) -> dict[str, float]:
    study, paths = large_study(work, study_mb)
    data = work / "serve-data"
    data.mkdir()
    port, http_port = free_port(), free_port()
    server = start_serve(data, port, http_port)
    try:
        store(port, paths)
        for path in paths:
            path.unlink()
        wait_indexed(http_port, study.study_instance_uid, STUDY_OBJECTS)
        baseline = rss_bytes(server.pid)
        body = work / "study.multipart"
        started = time.perf_counter()
        with sampled(server.pid) as peak:
            subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--fail",
                    "-H",
                    f"Accept: {RETRIEVE_ACCEPT}",
                    "-o",
                    str(body),
                    f"http://127.0.0.1:{http_port}/dicom-web/studies/{study.study_instance_uid}",
                ],
                check=True,
            )
        seconds = time.perf_counter() - started
        size = body.stat().st_size
        body.unlink()
    finally:
        stop(server)
    return {
        "study_mb": study_mb,
        "response_mb": round(size / 2**20, 1),
        "idle_rss_mb": round(baseline / 2**20, 1),
        "peak_rss_mb": round(peak() / 2**20, 1),
        "serve_seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--study-mb", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        work = Path(tmp)
        result = {
            "receiving": receiving(work, args.size_mb),
            "serving_wado_rs": serving(work, args.study_mb),
            "target_mb": TARGET_MB,
        }
        print(result, flush=True)
        save("peak_rss", result)


if __name__ == "__main__":
    main()
