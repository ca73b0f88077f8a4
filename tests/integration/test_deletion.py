"""Deleting through ``micropacs delete`` against a running ``micropacs serve``: stored with
storescu, gone from C-FIND (findscu), the BlobStore and the counts; a SIGKILL in the middle
of a large study's deletion leaves it wholly there or wholly gone, then gone."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from unittest.mock import patch

import pytest
from pydicom import dcmread

from micropacs.adapters.factory import open_blob_store, open_catalog, open_event_bus
from micropacs.config import Settings
from micropacs.events import AUDIT, AuditRecorded
from micropacs.ports import CatalogCounts, InstanceLocation
from tests import dicomdata
from tests.integration.peers import find_matches, find_stored, findscu, storescu
from tests.integration.server import Server, micropacs_env, start_server

EMPTY = CatalogCounts(patients=0, studies=0, series=0, instances=0)


def settings_of(server: Server) -> Settings:
    """The settings the server runs with: its environment, its data directory."""
    with patch.dict(os.environ, server.env):
        return Settings(data_dir=server.data_dir)


def counts(server: Server) -> CatalogCounts:
    async def read() -> CatalogCounts:
        catalog = await open_catalog(settings_of(server).catalog_url)
        try:
            return await catalog.counts()
        finally:
            await catalog.close()

    return asyncio.run(read())


def located(server: Server, study: str) -> list[InstanceLocation]:
    """What the catalog answers for the study right now (no read barrier)."""

    async def read() -> list[InstanceLocation]:
        catalog = await open_catalog(settings_of(server).catalog_url)
        try:
            return await catalog.locate(study_uids=[study])
        finally:
            await catalog.close()

    return asyncio.run(read())


def objects(server: Server, prefix: str = "") -> list[str]:
    async def read() -> list[str]:
        settings = settings_of(server)
        blobs = await open_blob_store(settings.blob_url, fsync=False, s3=settings.s3)
        try:
            return [key async for key in blobs.iterate(prefix)]
        finally:
            await blobs.close()

    return asyncio.run(read())


def audited(server: Server, kind: str, timeout: float = 30) -> AuditRecorded:
    """The first audit record of ``kind`` on the server's bus, waited for (a new Kafka
    group is assigned its partitions a moment after it joins)."""

    async def read() -> AuditRecorded:
        settings = settings_of(server)
        bus = await open_event_bus(settings.bus_url, settings.kafka)
        consumer = await bus.consumer(AUDIT, f"reader-{uuid.uuid4().hex}")
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for record in await consumer.poll(1000, 0.5):
                    event = AuditRecorded.from_bytes(record.value)
                    if event.kind == kind:
                        return event
            raise AssertionError(f"no {kind} audit record in {timeout} s")
        finally:
            await consumer.close()
            await bus.close()

    return asyncio.run(read())


def delete(server: Server, *args: str, answer: str | None = None) -> tuple[int, str]:
    """``micropacs delete ARGS`` against the server's stores: exit code and output."""
    result = subprocess.run(
        [sys.executable, "-m", "micropacs", "delete", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        env=micropacs_env(server.env),
        input=answer,
        timeout=120,
    )
    return result.returncode, result.stdout + result.stderr


def study_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_a_deleted_study_is_found_no_more_and_its_objects_are_gone(
    fresh_server: Server, tmp_path: Path
) -> None:
    kept = dicomdata.make_ct_series(tmp_path / "kept", 2, rows=32, cols=32)
    gone = dicomdata.make_ct_series(tmp_path / "gone", 5, rows=32, cols=32)
    storescu(fresh_server, [*kept, *gone])
    study = study_of(gone[0])
    find_stored(fresh_server, "IMAGE", 5, StudyInstanceUID=study)
    assert len(objects(fresh_server)) == 7

    code, out = delete(fresh_server, "--study", study, answer="n\n")
    assert code != 0 and "Aborted" in out
    code, out = delete(fresh_server, "--study", study, "--reason", "wrong patient", "--yes")
    assert code == 0, out
    assert "5 instances" in out

    assert (
        findscu(
            fresh_server, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}, tmp_path / "f"
        )
        == []
    )
    assert find_matches(fresh_server, "IMAGE", StudyInstanceUID=study) == []
    assert len(find_matches(fresh_server, "IMAGE", StudyInstanceUID=study_of(kept[0]))) == 2
    # The index commits a deletion after its objects went: the C-FIND waited for that.
    assert len(objects(fresh_server)) == 2
    assert all(study not in key for key in objects(fresh_server))
    assert counts(fresh_server) == CatalogCounts(patients=1, studies=1, series=1, instances=2)
    record = audited(fresh_server, "study-deleted")
    assert (record.actor, record.study_uids) == ("cli", (study,))
    assert "wrong patient" in record.detail


def test_deleting_a_series_and_an_instance(fresh_server: Server, tmp_path: Path) -> None:
    files = dicomdata.make_ct_series(tmp_path / "in", 3, rows=32, cols=32)
    storescu(fresh_server, files)
    first = dcmread(files[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    find_stored(fresh_server, "IMAGE", 3, StudyInstanceUID=study)
    code, out = delete(
        fresh_server,
        "--study",
        study,
        "--series",
        series,
        "--instance",
        first.SOPInstanceUID,
        "--yes",
    )
    assert code == 0 and "1 instances" in out, out
    assert len(find_matches(fresh_server, "IMAGE", StudyInstanceUID=study)) == 2
    code, out = delete(fresh_server, "--study", study, "--series", series, "--yes")
    assert code == 0 and "2 instances" in out, out
    assert find_matches(fresh_server, "SERIES", StudyInstanceUID=study) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--study", "1.2.826.0.1.3680043.10.543.999"), "no such study"),
        (("--study", "../../etc/passwd"), "StudyInstanceUID is not a valid UID"),
        (("--study", "1.2.3", "--instance", "1.2.3.4"), "--instance needs --series"),
        (("--series", "1.2.3"), "Missing option '--study'"),
    ],
)
def test_a_bad_or_unknown_target_fails_clearly(
    fresh_server: Server, args: tuple[str, ...], message: str
) -> None:
    code, out = delete(fresh_server, *args, "--yes")
    assert code != 0
    assert message in out


@pytest.mark.slow
def test_sigkill_in_a_large_studys_deletion_leaves_it_whole_or_gone(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    files = dicomdata.make_ct_series(tmp_path / "in", 400, rows=64, cols=64)
    study = study_of(files[0])
    server = start_server(tmp_path / "data", env=server_env)
    try:
        storescu(server, files)
        find_stored(server, "IMAGE", 400, StudyInstanceUID=study)
        code, out = delete(server, "--study", study, "--yes")
        assert code == 0, out
        # Kill it while the deletion runs: once its objects start to go, or at once if
        # none has gone yet by the time the first listing returns.
        deadline = time.monotonic() + 30
        while len(objects(server)) == 400 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.kill()
    records, left = len(located(server, study)), len(objects(server))
    assert records in (0, 400), f"{records} records and {left} objects after the kill"

    restarted = start_server(tmp_path / "data", env=server_env)
    try:
        assert len(find_matches(restarted, "IMAGE", StudyInstanceUID=study)) in (0, 400)
        deadline = time.monotonic() + 60
        while find_matches(restarted, "IMAGE", StudyInstanceUID=study) or objects(restarted):
            assert time.monotonic() < deadline, "the study is not gone after the restart"
            time.sleep(0.2)
        assert counts(restarted) == EMPTY
    finally:
        restarted.stop()
