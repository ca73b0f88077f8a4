"""CPU per received file of the store's preparation (header read, checks, coercion, event)
with and without routing rules (docs/routing.md, "Coercion at ingest").

In one process, no server: ``StoreService.prepare`` (the CPU half of a store, which a
C-STORE runs in its association's thread) over 200 CT 512x512 written to a temporary
folder (warm in the page cache), each handed as C-STORE hands it (hashed as received), with
no rules file; a file of forward rules only; a coercion rule no file matches; and a
coercion rule every file matches (set IssuerOfPatientID, remove InstitutionName).

    python -m bench.coercion_cost [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from micropacs.adapters.factory import open_blob_store, open_event_bus
from micropacs.routing.rules import RuleSet, parse_rules
from services.ingest.metrics import IngestMetrics
from services.ingest.store_service import Received, StoreService, discard
from tests import dicomdata

FORWARD_ONLY = "rules:\n  - {name: all, forward: [{destination: WS1}]}\n"
COERCE = """
rules:
  - name: fix
    match: {calling_ae: %s}
    coerce: [{set: IssuerOfPatientID, value: HOSPITAL_A}, {remove: InstitutionName}]
  - name: all
    forward: [{destination: WS1}]
"""
CASES = {
    "no rules file": RuleSet(),
    "forward rules only": parse_rules(FORWARD_ONLY),
    "a coercion matching nothing": parse_rules(COERCE % "OTHER"),
    "a coercion matching every file": parse_rules(COERCE % "CT01"),
}


def per_file_ms(service: StoreService, paths: list[Path], rounds: int) -> float:
    """The best round's CPU time per file, in milliseconds."""
    best = []
    for _ in range(rounds):
        started = time.process_time()
        for path in paths:
            received = Received(path, "CT01", "MICROPACS", owned=False, sha256="0" * 64)
            discard(service.prepare(received))  # removes a coerced copy, never the file
        best.append((time.process_time() - started) / len(paths) * 1000)
    return min(best)


async def measure(folder: Path, rounds: int) -> None:
    """Print the per-file CPU time of each case (the adapters are opened for the service's
    sake; preparing touches neither)."""
    paths = dicomdata.make_ct_series(folder / "ct", 200)
    blobs = await open_blob_store(f"file://{folder / 'objects'}", fsync=False)
    bus = await open_event_bus(f"sqlite://{folder / 'bus.db'}")
    try:
        for label, rules in [*CASES.items(), *CASES.items()]:  # twice: the noise shows
            metrics = IngestMetrics(CollectorRegistry())
            service = StoreService(
                blobs, bus, metrics, site="bench", storage_group="default", rules=rules
            )
            print(f"{label:32s} {per_file_ms(service, paths, rounds):6.3f} ms per CT file")
    finally:
        await bus.close()
        await blobs.close()


def main() -> None:
    """Measure in a temporary folder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        asyncio.run(measure(Path(name), args.rounds))


if __name__ == "__main__":
    main()
