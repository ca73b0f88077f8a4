"""C-FIND latency with 1,000,000 instances in the catalog.

The catalog is loaded through the index path (the Indexer writing batches of
instance.stored records) with synthetic headers and no pixel data, then
``micropacs serve`` answers queries from findscu (a new association each, as
a workstation does) and from one persistent pynetdicom association.

    python -m bench.find_latency [--instances 1000000] [--queries 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydicom import Dataset
from tqdm import tqdm

from bench.common import (
    DCMTK_ENV,
    STUDY_ROOT_FIND,
    find_association,
    free_port,
    save,
    start_serve,
    stop,
    summary_ms,
    synthetic_stored,
)
from micropacs.adapters.factory import open_catalog
from micropacs.config import IndexSettings
from micropacs.ports import Record
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics
from tests import dicomdata

SERIES_SIZE = 250


async def load(catalog_path: Path, instances: int) -> dict[str, Any]:
    catalog = await open_catalog(f"sqlite://{catalog_path}")
    indexer = Indexer(None, catalog, IndexMetrics(CollectorRegistry()), IndexSettings())  # type: ignore[arg-type]
    started = time.perf_counter()
    batch: list[Record] = []
    sample: dict[str, Any] = {}
    now = datetime.now(UTC).isoformat()
    for i in tqdm(range(instances), unit="inst", desc="index", mininterval=2):
        ds = dicomdata.synthetic_header(i)
        if i == 0:
            sample = {
                "PatientID": ds.PatientID,
                "PatientName": str(ds.PatientName),
                "StudyDate": ds.StudyDate,
                "AccessionNumber": ds.AccessionNumber,
                "StudyInstanceUID": ds.StudyInstanceUID,
                "SeriesInstanceUID": ds.SeriesInstanceUID,
            }
        event = synthetic_stored(ds, i, now)
        batch.append(Record("instance.stored", 0, i, event.key, event.to_bytes()))
        if len(batch) == 1000:
            await indexer.process(batch)
            batch = []
    if batch:
        await indexer.process(batch)
    seconds = time.perf_counter() - started
    counts = await catalog.counts()
    await catalog.close()
    return {
        "sample": sample,
        "load_seconds": round(seconds, 1),
        "index_events_per_s": round(instances / seconds, 1),
        "counts": counts.__dict__,
    }


QUERIES: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {
    "study_by_patient_id": lambda s: {"PatientID": s["PatientID"]},
    "study_by_name_prefix": lambda s: {"PatientName": s["PatientName"][:4] + "*"},
    "study_by_date_range": lambda s: {"StudyDate": f"{s['StudyDate']}-{s['StudyDate']}"},
    "study_by_accession": lambda s: {"AccessionNumber": s["AccessionNumber"]},
}


def findscu_once(port: int, keys: dict[str, str], level: str) -> tuple[float, int]:
    args = ["findscu", "-S", "-aec", "MICROPACS", "-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}" if value else key]
    args += ["127.0.0.1", str(port)]
    started = time.perf_counter()
    result = subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    return elapsed, result.stderr.count("Find Response:") - 1


def identifier(level: str, keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def measure(port: int, sample: dict[str, Any], queries: int) -> dict[str, Any]:
    cases: dict[str, tuple[str, dict[str, str]]] = {
        name: (
            "STUDY",
            {  # return keys first: the matching key of the case overrides its empty one
                "StudyInstanceUID": "",
                "PatientName": "",
                "StudyDescription": "",
                "NumberOfStudyRelatedInstances": "",
                **make(sample),
            },
        )
        for name, make in QUERIES.items()
    }
    cases["image_level_250_series"] = (
        "IMAGE",
        {
            "StudyInstanceUID": sample["StudyInstanceUID"],
            "SeriesInstanceUID": sample["SeriesInstanceUID"],
            "SOPInstanceUID": "",
            "InstanceNumber": "",
        },
    )
    results: dict[str, Any] = {}
    assoc = find_association(port)
    try:
        for name, (level, keys) in cases.items():
            dcmtk_samples: list[float] = []
            for _ in range(queries):
                elapsed, _ = findscu_once(port, dict(keys), level)
                dcmtk_samples.append(elapsed)
            py_samples: list[float] = []
            for _ in range(queries):
                started = time.perf_counter()
                found = [
                    r
                    for s, r in assoc.send_c_find(identifier(level, keys), STUDY_ROOT_FIND)
                    if s and s.Status == 0xFF00
                ]
                py_samples.append(time.perf_counter() - started)
            results[name] = {
                "matches": len(found),
                "findscu": summary_ms(dcmtk_samples),
                "persistent_association": summary_ms(py_samples),
            }
            print(name, json.dumps(results[name]), flush=True)
    finally:
        assoc.release()
    return results


def sample_keys() -> dict[str, Any]:
    """The keys of the first synthetic instance, which every query aims at."""
    ds = dicomdata.synthetic_header(0)
    return {
        "PatientID": ds.PatientID,
        "PatientName": str(ds.PatientName),
        "StudyDate": ds.StudyDate,
        "AccessionNumber": ds.AccessionNumber,
        "StudyInstanceUID": ds.StudyInstanceUID,
        "SeriesInstanceUID": ds.SeriesInstanceUID,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--catalog", type=Path, help="reuse (or keep) the loaded catalog.db at this path"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-find-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        if args.catalog and args.catalog.exists():
            print(f"reusing the catalog {args.catalog}", flush=True)
            (data / "catalog.db").symlink_to(args.catalog.resolve())
            loaded: dict[str, Any] = {"sample": sample_keys(), "reused": str(args.catalog)}
        else:
            loaded = asyncio.run(load(data / "catalog.db", args.instances))
            if args.catalog:
                (data / "catalog.db").rename(args.catalog)
                (data / "catalog.db").symlink_to(args.catalog.resolve())
        port = free_port()
        server = start_serve(data, port, free_port())
        try:
            latencies = measure(port, loaded["sample"], args.queries)
        finally:
            stop(server)
        save(
            "find_latency",
            {
                "instances": args.instances,
                **loaded,
                "queries": latencies,
                "orthanc_52k_reference_ms": {
                    "study_findscu_p95": "30-45",
                    "study_persistent_p95": "14-30",
                    "image_250_findscu": 113,
                },
            },
        )


if __name__ == "__main__":
    main()
