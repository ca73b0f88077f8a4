"""``micropacs import DIR``: store a folder of DICOM files through the StoreService.

The files are copied, never moved; each becomes an instance.stored event that
the index service (of a running or the next ``micropacs serve``) indexes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from tqdm import tqdm

from micropacs.adapters.factory import open_blob_stores, open_event_bus
from micropacs.config import Settings
from micropacs.errors import MicropacsError, NotDicom
from services.ingest.app import build
from services.ingest.store_service import Received

log = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    """What an import did."""

    stored: int = 0
    skipped: int = 0
    failed: int = 0


async def import_directory(settings: Settings, directory: Path) -> ImportSummary:
    """Store every file under ``directory`` that is DICOM, with a progress bar."""
    files = await asyncio.to_thread(lambda: sorted(p for p in directory.rglob("*") if p.is_file()))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    blobs = await open_blob_stores(
        settings.blob_url, settings.storage.groups, fsync=settings.storage.fsync, s3=settings.s3
    )
    bus = await open_event_bus(settings.bus_url, settings.kafka)
    service = build(settings, blobs, bus, CollectorRegistry()).store
    summary = ImportSummary()
    try:
        with tqdm(files, unit="file", desc="import", disable=None) as progress:
            for path in progress:
                received = Received(
                    path=path, calling_ae="IMPORT", called_ae=settings.dicom.ae_title, owned=False
                )
                try:
                    await service.store(received)
                    summary.stored += 1
                except NotDicom:
                    summary.skipped += 1
                except MicropacsError as exc:
                    summary.failed += 1
                    tqdm.write(f"failed: {path}: {exc}")
                progress.set_postfix(
                    stored=summary.stored, skipped=summary.skipped, failed=summary.failed
                )
    finally:
        await bus.close()
        await blobs.close()
    return summary
