"""DICOMweb measured, against Debian's Orthanc 1.10 with its DICOMweb plug-in in the same run.

- QIDO-RS study searches (median, p95) with 100,000 instances indexed (400
  studies of 250 instances, 100 patients), over one keep-alive connection;
- WADO-RS metadata of a 500-instance series (cold first request, then warm
  median and p95), micropacs and Orthanc loaded with the same 500 CT
  512×512 instances by storescu;
- WADO-RS retrieval of that study (instances/s, MB/s), stored syntax, both.

    python -m bench.dicomweb [--instances 100000] [--study-size 500] [--queries 50]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread

from bench.common import DCMTK_ENV, free_port, save, start_serve, stop, summary_ms
from bench.find_latency import QUERIES, load
from bench.orthanc import Orthanc
from bench.store_throughput import send
from tests import dicomdata

RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"'


def qido_latency(work: Path, instances: int, queries: int) -> dict[str, Any]:
    data = work / "qido" / "data"
    data.mkdir(parents=True)
    loaded = asyncio.run(load(data / "catalog.db", instances))
    http_port = free_port()
    server = start_serve(data, free_port(), http_port)
    results: dict[str, Any] = {"load": {k: v for k, v in loaded.items() if k != "sample"}}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}/dicom-web") as http:
            for name, keys in QUERIES.items():
                params = keys(loaded["sample"])
                samples = []
                for _ in range(queries):
                    started = time.perf_counter()
                    answer = http.get("/studies", params=params)
                    samples.append(time.perf_counter() - started)
                    assert answer.status_code == 200 and answer.json(), (name, answer.status_code)
                results[name] = summary_ms(samples)
    finally:
        stop(server)
    return results


def timed(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    answer = call()
    return time.perf_counter() - started, answer


def wait_for(http: httpx.Client, path: str, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = http.get(path, params={"limit": str(count + 1)})
        if answer.status_code == 200 and len(answer.json()) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{count} instances never became searchable at {path}")


def measure_peer(root: str, study: str, series: str, count: int, runs: int) -> dict[str, Any]:
    with httpx.Client(base_url=root, timeout=600) as http:
        wait_for(http, f"/studies/{study}/series/{series}/instances", count)
        metadata = f"/studies/{study}/series/{series}/metadata"
        cold, answer = timed(lambda: http.get(metadata))
        assert answer.status_code == 200 and len(answer.json()) == count
        warm = [timed(lambda: http.get(metadata))[0] for _ in range(runs)]
        rates = []
        for _ in range(3):
            started = time.perf_counter()
            size = 0
            with http.stream("GET", f"/studies/{study}", headers={"Accept": RETRIEVE_ACCEPT}) as r:
                assert r.status_code == 200, r.status_code
                for chunk in r.iter_bytes(1 << 20):
                    size += len(chunk)
            seconds = time.perf_counter() - started
            rates.append((count / seconds, size / seconds / 2**20))
    best = max(rates)
    return {
        "metadata_cold_ms": round(cold * 1000, 1),
        "metadata_warm_ms": summary_ms(warm),
        "retrieve_instances_per_s": round(best[0], 1),
        "retrieve_mb_per_s": round(best[1], 1),
    }


def wado_against_orthanc(work: Path, study_size: int, runs: int) -> dict[str, Any]:
    files = dicomdata.make_ct_series(work / "ct", study_size, rows=512, cols=512)
    first = dcmread(files[0], stop_before_pixels=True)
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    data = work / "wado" / "data"
    data.mkdir(parents=True)
    dicom_port, http_port = free_port(), free_port()
    server = start_serve(data, dicom_port, http_port)
    try:
        send(dicom_port, "MICROPACS", files, 4)
        ours = measure_peer(
            f"http://127.0.0.1:{http_port}/dicom-web", study, series, study_size, runs
        )
    finally:
        stop(server)
    orthanc = Orthanc(work / "orthanc", env=DCMTK_ENV)  # TCP_NODELAY, as our DCMTK peers
    try:
        send(orthanc.dicom_port, "ORTHANC", files, 4)
        theirs = measure_peer(orthanc.dicomweb, study, series, study_size, runs)
    finally:
        orthanc.stop()
    return {
        "instances": study_size,
        "micropacs": ours,
        "orthanc": theirs,
        "ratios (micropacs / orthanc)": {
            "metadata_warm_median": round(
                ours["metadata_warm_ms"]["median_ms"] / theirs["metadata_warm_ms"]["median_ms"], 3
            ),
            "retrieve_instances_per_s": round(
                ours["retrieve_instances_per_s"] / theirs["retrieve_instances_per_s"], 3
            ),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--study-size", type=int, default=500)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dicomweb-") as tmp:
        work = Path(tmp)
        print("QIDO-RS …", flush=True)
        qido = qido_latency(work, args.instances, args.queries)
        print("WADO-RS against Orthanc …", flush=True)
        wado = wado_against_orthanc(work, args.study_size, args.queries)
    save("dicomweb", {"qido_rs_study_search_ms": qido, "wado_rs": wado})


if __name__ == "__main__":
    main()
