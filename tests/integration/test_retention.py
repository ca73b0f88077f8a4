"""Retention and tiering against a running ``micropacs serve`` with two storage groups
(two folders, or two buckets on the stack), through ``micropacs retention run``:

* a tiering run that moves a study while a C-GET of it is under way: the retrieve goes
  on from the objects it located and every instance arrives; then, the old objects
  removed after the grace period, a C-GET reads the study from its new group;
* a retention run by free space: its dry run lists the least recently received study and
  changes nothing, its real run deletes that study (gone from C-FIND) and keeps the newer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE, build_role, evt

from micropacs.adapters.factory import open_blob_store, open_catalog
from micropacs.config import Settings
from micropacs.ports import StoredInstance
from stack import servers
from tests import dicomdata
from tests.integration.peers import (
    StudyRootQueryRetrieveInformationModelGet,
    find_matches,
    find_stored,
    sent_bytes,
    storescu,
)
from tests.integration.server import Server, micropacs_env, start_server

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
TIER = """
policies:
  - name: tier
    group: default
    action: move
    to: archive
    older_than_days: 0.000001
"""


def archive_url(shared_stack: servers.Stack | None, env: dict[str, str], tmp_path: Path) -> str:
    """The archive group's own store: a folder of its own, or a bucket of its own."""
    if shared_stack is not None:
        # A bucket of its own name: the default store lists the buckets <its bucket>-<group>.
        base, _, bucket = env["MICROPACS_STORAGE__BLOB_URL"].rpartition("/")
        return f"{base}/arc{bucket.rpartition('-')[2]}"
    return f"file://{tmp_path / 'archive'}"


@pytest.fixture
def two_groups(
    tmp_path: Path, server_env: dict[str, str], shared_stack: servers.Stack | None
) -> dict[str, str]:
    """The environment of a server whose archive group has a store of its own, whose
    router runs no policy by itself (the tests run them)."""
    env = dict(server_env)
    env["MICROPACS_STORAGE__GROUPS"] = json.dumps(
        {"archive": archive_url(shared_stack, env, tmp_path)}
    )
    env["MICROPACS_RETENTION__SCHEDULED"] = "false"
    return env


def with_policies(env: dict[str, str], path: Path, text: str, **extra: str) -> dict[str, str]:
    path.write_text(text)
    return {**env, "MICROPACS_RETENTION__POLICIES_FILE": str(path), **extra}


def retention(server: Server, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``micropacs retention run ARGS`` against the server's stores."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "micropacs",
            "retention",
            "run",
            *args,
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        env=micropacs_env(env),
        timeout=120,
    )


def settings_of(server: Server, env: dict[str, str]) -> Settings:
    with patch.dict(os.environ, env):
        return Settings(data_dir=server.data_dir)


def stored(server: Server, env: dict[str, str], study: str) -> list[StoredInstance]:
    """The study's instances as the catalog holds them now."""

    async def read() -> list[StoredInstance]:
        catalog = await open_catalog(settings_of(server, env).catalog_url)
        try:
            return await catalog.stored_instances(study)
        finally:
            await catalog.close()

    return asyncio.run(read())


def objects(url: str, env: dict[str, str], server: Server, study: str) -> list[str]:
    """The keys of the study's objects in the store at ``url`` (one group's own store)."""

    async def read() -> list[str]:
        settings = settings_of(server, env)
        blobs = await open_blob_store(url, fsync=False, s3=settings.s3)
        try:
            return sorted([key async for key in blobs.iterate() if f"/{study}/" in key])
        finally:
            await blobs.close()

    return asyncio.run(read())


def get_study(
    server: Server, study: str, on_first: Callable[[], None] | None = None
) -> tuple[list[Dataset], int]:
    """C-GET the study with pynetdicom; the first instance's C-STORE is answered only once
    ``on_first`` returned, so what it does happens in the middle of the retrieve."""
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.encoded = sent_bytes(event)
        received.append(ds)
        if on_first is not None and len(received) == 1:
            on_first()
        return 0x0000

    ae = AE(ae_title="PYGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CT_IMAGE)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    assoc = ae.associate(
        server.host,
        server.dicom_port,
        ae_title=server.ae_title,
        ext_neg=[build_role(CT_IMAGE, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    final = -1
    try:
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            assert status is not None, "C-GET timed out or aborted"
            if status.Status not in (0xFF00, 0xFF01):
                final = int(status.Status)
    finally:
        assoc.release()
    return received, final


def study_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_a_study_moved_while_it_is_retrieved_arrives_whole_then_comes_from_its_new_group(
    tmp_path: Path, two_groups: dict[str, str], shared_stack: servers.Stack | None
) -> None:
    env = with_policies(two_groups, tmp_path / "policies.yaml", TIER)
    server = start_server(tmp_path / "data", env=env)
    try:
        files = dicomdata.make_ct_series(tmp_path / "ct", 12, rows=64, cols=64)
        storescu(server, files)
        study = study_of(files[0])
        find_stored(server, "IMAGE", 12, StudyInstanceUID=study)
        sent = {str(dcmread(f).SOPInstanceUID): dcmread(f).PixelData for f in files}
        default_url = settings_of(server, env).blob_url
        archive = archive_url(shared_stack, two_groups, tmp_path)

        runs: list[subprocess.CompletedProcess[str]] = []
        received, status = get_study(
            server, study, on_first=lambda: runs.append(retention(server, env))
        )

        # The move happened in the middle of the retrieve, which still got every instance.
        assert len(runs) == 1
        assert runs[0].returncode == 0, runs[0].stdout + runs[0].stderr
        assert "moved 1 studies" in runs[0].stdout, runs[0].stdout
        assert f"moved: {study} default -> archive (12 instances" in runs[0].stdout
        assert status == 0x0000
        assert {str(ds.SOPInstanceUID): ds.PixelData for ds in received} == sent
        assert {one.storage_group for one in stored(server, env, study)} == {"archive"}
        assert len(objects(archive, env, server, study)) == 12
        # Through the grace period the old objects stay for retrievals that located them.
        assert len(objects(default_url, env, server, study)) == 12

        # Past it (none here), the next run removes them; the study is read from its new group.
        done = retention(server, {**env, "MICROPACS_RETENTION__GRACE_PERIOD": "0"})
        assert done.returncode == 0, done.stdout + done.stderr
        assert "moved 0 studies" in done.stdout and "old objects removed 12" in done.stdout
        assert objects(default_url, env, server, study) == []
        received, status = get_study(server, study)
        assert status == 0x0000
        assert {str(ds.SOPInstanceUID): ds.PixelData for ds in received} == sent
    finally:
        server.stop()


def test_a_retention_run_by_free_space_deletes_the_least_recently_received_study(
    tmp_path: Path, two_groups: dict[str, str]
) -> None:
    server = start_server(tmp_path / "data", env=two_groups)
    try:
        old = dicomdata.make_ct_series(
            tmp_path / "old", 3, rows=32, cols=32, study=dicomdata.StudySpec()
        )
        storescu(server, old)
        find_stored(server, "IMAGE", 3, StudyInstanceUID=study_of(old[0]))
        new = dicomdata.make_ct_series(
            tmp_path / "new", 4, rows=32, cols=32, study=dicomdata.StudySpec()
        )
        storescu(server, new)
        find_stored(server, "IMAGE", 4, StudyInstanceUID=study_of(new[0]))
        old_bytes = sum(one.size for one in stored(server, two_groups, study_of(old[0])))
        new_bytes = sum(one.size for one in stored(server, two_groups, study_of(new[0])))
        # One byte free of the quota, and as many wanted free as the old study takes.
        policy = f"""
policies:
  - name: room
    group: default
    action: delete
    older_than_days: 0.000001
    quota: {old_bytes + new_bytes + 1}
    free_below: {old_bytes}
"""
        env = with_policies(two_groups, tmp_path / "policies.yaml", policy)

        dry = retention(server, env, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        lines = [line.split("\t") for line in dry.stdout.splitlines()]
        assert [line[:6] for line in lines] == [
            ["delete", study_of(old[0]), "default", "-", "3", str(old_bytes)]
        ]
        assert "nothing changed" in dry.stderr
        assert len(find_matches(server, "IMAGE", StudyInstanceUID=study_of(old[0]))) == 3

        real = retention(server, env)
        assert real.returncode == 0, real.stdout + real.stderr
        assert "deleted 1 " in real.stdout, real.stdout
        assert find_matches(server, "STUDY", StudyInstanceUID=study_of(old[0])) == []
        assert len(find_matches(server, "IMAGE", StudyInstanceUID=study_of(new[0]))) == 4
        assert stored(server, two_groups, study_of(old[0])) == []
    finally:
        server.stop()


def test_a_kill_in_the_middle_of_a_move_leaves_the_study_readable(
    tmp_path: Path, two_groups: dict[str, str], shared_stack: servers.Stack | None
) -> None:
    """``micropacs retention run`` killed with SIGKILL once it copied the study: the test
    holds the SQLite catalog's write lock (readers go on), so the run cannot switch the
    catalog before it is killed. The study stays readable at its old keys, the copies
    are left for a later look, and the next run moves the study."""
    if shared_stack is not None:
        pytest.skip("holds the embedded catalog's write lock")
    env = with_policies(two_groups, tmp_path / "policies.yaml", TIER)
    server = start_server(tmp_path / "data", env=env)
    try:
        files = dicomdata.make_ct_series(tmp_path / "ct", 8, rows=32, cols=32)
        storescu(server, files)
        study = study_of(files[0])
        find_stored(server, "IMAGE", 8, StudyInstanceUID=study)
        sent = {str(dcmread(f).SOPInstanceUID): dcmread(f).PixelData for f in files}
        default = Path(settings_of(server, env).blob_url.removeprefix("file://"))
        archive = Path(archive_url(shared_stack, two_groups, tmp_path).removeprefix("file://"))
        catalog_file = Path(settings_of(server, env).catalog_url.removeprefix("sqlite://"))

        lock = sqlite3.connect(catalog_file, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            run = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "micropacs",
                    "retention",
                    "run",
                    "--data-dir",
                    str(server.data_dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=micropacs_env(env),
            )
            try:
                deadline = time.monotonic() + 60
                while len(list(archive.rglob("*.dcm"))) < 8:
                    assert run.poll() is None, "the run ended before it copied the study"
                    assert time.monotonic() < deadline, "the run did not copy the study in 60 s"
                    time.sleep(0.05)
            finally:
                run.kill()
                run.wait(10)
            lock.execute("ROLLBACK")
        finally:
            lock.close()

        # Killed before the switch: the catalog names every old object, a C-GET reads them.
        assert {one.storage_group for one in stored(server, env, study)} == {"default"}
        assert len(list((default / "default" / "moves").iterdir())) == 1
        received, status = get_study(server, study)
        assert status == 0x0000
        assert {str(ds.SOPInstanceUID): ds.PixelData for ds in received} == sent

        again = retention(server, env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "moved 1 studies" in again.stdout
        assert {one.storage_group for one in stored(server, env, study)} == {"archive"}
        received, status = get_study(server, study)
        assert status == 0x0000
        assert {str(ds.SOPInstanceUID): ds.PixelData for ds in received} == sent
    finally:
        server.stop()
