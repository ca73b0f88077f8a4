"""The hospital deployment measured: every service its own process on real Kafka, MinIO
and the MongoDB-compatible catalog, against DCMTK's storescp in the same run.

- ingest throughput with one and with two ingest processes (SO_REUSEPORT), four
  associations, 1,000 CT 512×512, as a ratio to storescp, and of ``micropacs serve``
  on the embedded stores;
- store-to-queryable latency: from each C-STORE response to the instance being
  found by C-FIND (p50, p95), on the stack and on ``micropacs serve``;
- index throughput replaying 100,000 instance.stored events;
- peak RSS of each service process.

    python -m bench.stack_pipeline [--count 1000] [--replay 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset, dcmread
from pynetdicom import AE, evt

from bench.common import (
    free_port,
    peak_rss_bytes,
    save,
    start_serve,
    stop,
    summary_ms,
    synthetic_stored,
    wait_port,
)
from bench.store_throughput import micropacs, send, storescp
from micropacs.adapters.factory import open_event_bus
from micropacs.dimse.sockets import set_nodelay
from micropacs.events import INSTANCE_STORED
from stack import servers
from tests import dicomdata

FIND = "1.2.840.10008.5.1.4.1.2.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def service(
    name: str, env: dict[str, str], data: Path, dicom_port: int | None, http_port: int
) -> subprocess.Popen[bytes]:
    full = {
        **os.environ,
        **env,
        "MICROPACS_DATA_DIR": str(data / name),
        "MICROPACS_HTTP__PORT": str(http_port),
        "MICROPACS_LOG_LEVEL": "WARNING",
    }
    if dicom_port:
        full["MICROPACS_DICOM__PORT"] = str(dicom_port)
    log = (data / f"{name}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "micropacs", "run", name], env=full, stdout=log, stderr=log
    )
    log.close()
    wait_port(dicom_port or http_port)
    return process


def stack_env(stack: servers.Stack, run: str) -> dict[str, str]:
    env = dict(stack.env)
    env["MICROPACS_KAFKA__TOPIC_PREFIX"] = f"{run}."
    env["MICROPACS_STORAGE__BLOB_URL"] = env["MICROPACS_STORAGE__BLOB_URL"] + "-" + run
    env["MICROPACS_STORAGE__CATALOG_URL"] += f"-{run}"
    return env


def pipeline_rate(
    stack: servers.Stack, files: list[Path], work: Path, ingest_workers: int
) -> dict[str, Any]:
    run = f"ingest{ingest_workers}"
    env = stack_env(stack, run)
    data = work / run
    data.mkdir()
    shared = env
    port = free_port()
    processes = {
        "ingest": service(
            "ingest",
            {**shared, "MICROPACS_DICOM__WORKERS": str(ingest_workers)},
            data,
            port,
            free_port(),
        ),
        "index": service("index", shared, data, None, free_port()),
        "qr": service("qr", shared, data, free_port(), free_port()),
    }
    try:
        seconds = send(port, "MICROPACS", files, 4)
        peaks = {name: round(peak_rss_bytes(p.pid) / 2**20, 1) for name, p in processes.items()}
    finally:
        for process in processes.values():
            stop(process)
    return {"images_per_s": round(len(files) / seconds, 1), "peak_rss_mb": peaks}


def store_to_queryable(stack: servers.Stack, work: Path, samples: int) -> dict[str, float]:
    env = stack_env(stack, "latency")
    data = work / "latency"
    data.mkdir()
    ingest_port, qr_port = free_port(), free_port()
    processes = [
        service("ingest", env, data, ingest_port, free_port()),
        service("index", env, data, None, free_port()),
        service("qr", env, data, qr_port, free_port()),
    ]
    try:
        return queryable_latency(ingest_port, qr_port, work / "latency-ct", samples)
    finally:
        for process in processes:
            stop(process)


def store_to_queryable_embedded(work: Path, samples: int) -> dict[str, float]:
    data = work / "latency-embedded" / "data"
    data.mkdir(parents=True)
    port = free_port()
    server = start_serve(data, port, free_port())
    try:
        return queryable_latency(port, port, work / "latency-embedded-ct", samples)
    finally:
        stop(server)


def queryable_latency(
    ingest_port: int, qr_port: int, folder: Path, samples: int
) -> dict[str, float]:
    """From each C-STORE response to a C-FIND finding the instance, over two held
    associations, one instance at a time."""
    files = dicomdata.make_ct_series(folder, samples, rows=256, cols=256)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(CT)
    ae.add_requested_context(FIND)
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, set_nodelay)]
    store = ae.associate("127.0.0.1", ingest_port, ae_title="MICROPACS", evt_handlers=handlers)
    find = ae.associate("127.0.0.1", qr_port, ae_title="MICROPACS", evt_handlers=handlers)
    latencies: list[float] = []
    try:
        for path in files:
            ds = dcmread(path)
            status = store.send_c_store(ds)
            acknowledged = time.perf_counter()
            assert status.Status == 0
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = ds.StudyInstanceUID
            query.SeriesInstanceUID = ds.SeriesInstanceUID
            query.SOPInstanceUID = ds.SOPInstanceUID
            while True:
                found = [r for s, r in find.send_c_find(query, FIND) if s and s.Status == 0xFF00]
                if found:
                    latencies.append(time.perf_counter() - acknowledged)
                    break
                if time.perf_counter() - acknowledged > 30:
                    raise TimeoutError("an acknowledged instance never became queryable")
    finally:
        store.release()
        find.release()
    return summary_ms(latencies)


async def publish_backlog(bus_url: str, prefix: str, count: int) -> None:
    from micropacs.config import KafkaSettings

    bus = await open_event_bus(bus_url, KafkaSettings(topic_prefix=prefix))
    now = datetime.now(UTC).isoformat()
    try:
        pending = []
        for i in range(count):
            ds = dicomdata.synthetic_header(i)
            event = synthetic_stored(ds, i, now, "default")
            pending.append(bus.publish(INSTANCE_STORED, event.key, event.to_bytes()))
            if len(pending) == 500:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await bus.close()


def index_replay(stack: servers.Stack, work: Path, count: int) -> dict[str, Any]:
    env = stack_env(stack, "replay")
    data = work / "replay"
    data.mkdir()
    print(f"publishing {count} events …", flush=True)
    asyncio.run(publish_backlog(env["MICROPACS_STORAGE__BUS_URL"], "replay.", count))
    shared = {**env, "MICROPACS_INDEX__BATCH_SIZE": "500"}
    http_port = free_port()
    started = time.perf_counter()
    index = service("index", shared, data, None, http_port)
    try:
        while True:
            text = httpx.get(f"http://127.0.0.1:{http_port}/metrics").text
            line = next(
                x for x in text.splitlines() if x.startswith("micropacs_index_upserts_total")
            )
            if float(line.split()[-1]) >= count:
                break
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        peak = round(peak_rss_bytes(index.pid) / 2**20, 1)
    finally:
        stop(index)
    return {
        "events": count,
        "seconds": round(seconds, 1),
        "events_per_s": round(count / seconds, 1),
        "index_peak_rss_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--replay", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        work = Path(tmp)
        ports = servers.Ports.picked_by(free_port)
        stack = servers.up(work / "stack", ports)
        try:
            files = dicomdata.make_ct_series(work / "ct", args.count, rows=512, cols=512)
            backend = servers.catalog_backend()
            result: dict[str, Any] = {"catalog": f"mongodb (FerretDB 1.24, {backend} backend)"}
            print("storescp, 4 associations …", flush=True)
            peer = storescp(files, 4, work)["images_per_s"]
            result["storescp_images_per_s"] = peer
            print("embedded (micropacs serve), 4 associations …", flush=True)
            embedded = micropacs(files, 4, work)
            result["embedded"] = {**embedded, "ratio": round(embedded["images_per_s"] / peer, 3)}
            for workers in (1, 2):
                print(f"stack, {workers} ingest process(es) …", flush=True)
                measured = pipeline_rate(stack, files, work, workers)
                measured["ratio"] = round(measured["images_per_s"] / peer, 3)
                result[f"stack_{workers}_ingest"] = measured
            print("store-to-queryable latency, stack and embedded …", flush=True)
            result["store_to_queryable_ms"] = store_to_queryable(stack, work, args.latency_samples)
            result["store_to_queryable_embedded_ms"] = store_to_queryable_embedded(
                work, args.latency_samples
            )
            result["index_replay"] = index_replay(stack, work, args.replay)
            save("stack_pipeline", result)
        finally:
            servers.down(stack.run_dir)


if __name__ == "__main__":
    main()
