"""Wildcard queries on attributes the catalog does not index, at 100,000 instances.

The SQLite catalog is loaded through the index path with synthetic headers
(400 studies of 250 instances, 100 patients), every instance given a
64-character ImageComments of ``a``; then the QueryService (behind C-FIND and
QIDO-RS alike) answers the worst patterns of the fuzzer's shapes, each run
five times (median), with the default ``MICROPACS_QUERY__MAX_EXAMINED`` and
with no bound (``0``); each result says what the query answered.

    python -m bench.wildcard_query [--instances 100000] [--catalog PATH]

With ``--catalog`` an existing file is queried as it is (loaded first if it
does not exist), so a second run does not pay for the load again.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from tqdm import tqdm

from bench.common import save, synthetic_stored
from micropacs.adapters.factory import open_catalog
from micropacs.config import IndexSettings, QuerySettings
from micropacs.dicom.json_model import to_json
from micropacs.dicom.matching import MAX_STARS
from micropacs.errors import MicropacsError
from micropacs.ports import Record
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics
from services.qr.metrics import QrMetrics
from services.qr.query_service import QueryService
from tests import dicomdata

COMMENT = "a" * 64
WORST = "*a" * (MAX_STARS - 1) + "*b"
"""The slowest shape the fuzzer found at the caps: every ``*`` but the last finds an ``a``."""
RUNS = 5


async def load(path: Path, instances: int) -> None:
    catalog = await open_catalog(f"sqlite://{path}")
    indexer = Indexer(None, catalog, IndexMetrics(CollectorRegistry()), IndexSettings())  # type: ignore[arg-type]
    now = datetime.now(UTC).isoformat()
    batch: list[Record] = []
    for i in tqdm(range(instances), unit="inst", desc="index", mininterval=2):
        ds = dicomdata.synthetic_header(i)
        ds.ImageComments = COMMENT
        event = synthetic_stored(ds, i, now)
        batch.append(Record("instance.stored", 0, i, event.key, event.to_bytes()))
        if len(batch) == 1000:
            await indexer.process(batch)
            batch = []
    if batch:
        await indexer.process(batch)
    await catalog.close()


def queries(study_uid: str) -> dict[str, tuple[dict[str, Any], bool]]:
    """Each measured query: its keys (keyword to value) and whether names ignore case."""
    image = {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": ""}
    return {
        "study_description_worst": (
            {"QueryRetrieveLevel": "STUDY", "StudyDescription": WORST},
            False,
        ),
        "study_patient_name_worst": ({"QueryRetrieveLevel": "STUDY", "PatientName": WORST}, False),
        "study_patient_name_worst_case_insensitive": (
            {"QueryRetrieveLevel": "STUDY", "PatientName": WORST},
            True,
        ),
        "study_patient_name_star_b_case_insensitive": (
            {"QueryRetrieveLevel": "STUDY", "PatientName": "*b"},
            True,
        ),
        "image_comments_worst": ({**image, "ImageComments": WORST}, False),
        "image_comments_star_b": ({**image, "ImageComments": "*b"}, False),
        "image_comments_worst_in_one_study": (
            {**image, "StudyInstanceUID": study_uid, "ImageComments": WORST},
            False,
        ),
        "image_comments_matching_in_one_study": (
            {**image, "StudyInstanceUID": study_uid, "ImageComments": "*a*a*"},
            False,
        ),
    }


def identifier(keys: dict[str, Any]) -> dict[str, Any]:
    from pydicom import Dataset

    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return to_json(ds)


async def measure(path: Path) -> dict[str, Any]:
    catalog = await open_catalog(f"sqlite://{path}")
    results: dict[str, Any] = {}
    study_uid = str(dicomdata.synthetic_header(0).StudyInstanceUID)
    try:
        for name, (keys, fold) in queries(study_uid).items():
            for bound in (QuerySettings().max_examined, 0):
                settings = QuerySettings(case_insensitive_pn=fold, max_examined=bound)
                service = QueryService(catalog, QrMetrics(CollectorRegistry()), settings, "BENCH")
                samples: list[float] = []
                outcome = ""
                for _ in range(RUNS):
                    started = time.perf_counter()
                    try:
                        found = await service.find(identifier(keys))
                        outcome = f"{len(found)} matches"
                    except MicropacsError as exc:
                        outcome = f"refused (0x{exc.dimse:04X} / {exc.http})"
                    samples.append(time.perf_counter() - started)
                results[f"{name}, max_examined={bound}"] = {
                    "median_ms": round(statistics.median(samples) * 1000, 2),
                    "min_ms": round(min(samples) * 1000, 2),
                    "outcome": outcome,
                }
    finally:
        await catalog.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--catalog", type=Path, help="catalog file to reuse (loaded if absent)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="micropacs-bench-") as work:
        path = args.catalog or Path(work) / "catalog.db"
        if not path.exists():
            started = time.perf_counter()
            asyncio.run(load(path, args.instances))
            print(f"loaded {args.instances} instances in {time.perf_counter() - started:.0f} s")
        save("wildcard_query", {"instances": args.instances, **asyncio.run(measure(path))})


if __name__ == "__main__":
    main()
