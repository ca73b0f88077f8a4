"""Read-your-writes: what micropacs acknowledged, the very next request finds.

The index applies events asynchronously, and nothing here waits for it: the
read barrier does (micropacs/read_barrier.py). On the embedded stores and on
the stack (``--backend stack``): stores then at once C-FIND, C-GET, C-MOVE,
QIDO-RS and WADO-RS metadata; eighty concurrent stores then one query; and
with the index stopped, a query answered within the barrier's bound and
counted, the barrier holding again once the index is back.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE, evt

from stack import servers
from tests import dicomdata
from tests.integration.conftest import isolated_env
from tests.integration.peers import (
    StudyRootQueryRetrieveInformationModelMove,
    associate,
    find_matches,
    find_stored,
    free_port,
    pyget,
    storescu,
    wait_indexed,
)
from tests.integration.server import Server, micropacs, start_server

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_UID = "0020000D"
SOP_UID = "00080018"
DICOM_JSON = "application/dicom+json"


def series(directory: Path, count: int) -> tuple[list[Path], str]:
    files = dicomdata.make_ct_series(directory, count, rows=16, cols=16)
    return files, dcmread(files[0], stop_before_pixels=True).StudyInstanceUID


def in_study(directory: Path, count: int, study: str) -> list[Path]:
    """``count`` more instances of ``study``, in a series of their own."""
    spec = dicomdata.StudySpec(study_instance_uid=study)
    return dicomdata.make_ct_series(directory, count, rows=16, cols=16, study=spec)


def sop_uids(files: list[Path]) -> set[str]:
    return {dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files}


def test_store_then_c_find_at_once(server: Server, tmp_path: Path) -> None:
    files, study = series(tmp_path, 40)
    storescu(server, files)
    found = find_stored(server, "IMAGE", 40, StudyInstanceUID=study)
    assert {match.SOPInstanceUID for match in found} == sop_uids(files)
    (counted,) = find_matches(
        server, "STUDY", StudyInstanceUID=study, NumberOfStudyRelatedInstances=""
    )
    assert int(counted.NumberOfStudyRelatedInstances) == 40


def test_store_then_c_get_at_once(server: Server, tmp_path: Path) -> None:
    files, study = series(tmp_path, 20)
    storescu(server, files)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    received, status = pyget(server, identifier, [CT])
    assert status == 0x0000
    assert {ds.SOPInstanceUID for ds in received} == sop_uids(files)


def test_store_then_c_move_at_once(server: Server, tmp_path: Path) -> None:
    received: list[str] = []
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    destination = AE(ae_title="RYWDEST")
    destination.add_supported_context(CT)
    port = free_port()
    scp = destination.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert scp is not None
    try:
        micropacs(
            "nodes", "add", "RYWDEST", "127.0.0.1", str(port),
            data_dir=server.data_dir, env=server.env,
        )  # fmt: skip
        files, study = series(tmp_path, 20)
        storescu(server, files)
        assoc = associate(server, [StudyRootQueryRetrieveInformationModelMove])
        try:
            identifier = Dataset()
            identifier.QueryRetrieveLevel = "STUDY"
            identifier.StudyInstanceUID = study
            responses = list(
                assoc.send_c_move(identifier, "RYWDEST", StudyRootQueryRetrieveInformationModelMove)
            )
        finally:
            assoc.release()
        final = responses[-1][0]
        assert final is not None and int(final.Status) == 0x0000
        assert int(final.NumberOfCompletedSuboperations) == 20
        assert set(received) == sop_uids(files)
    finally:
        scp.shutdown()


def test_store_then_qido_rs_and_wado_rs_metadata_at_once(server: Server, tmp_path: Path) -> None:
    files, study = series(tmp_path, 15)
    storescu(server, files)
    root = f"{server.http}/dicom-web"
    instances = httpx.get(f"{root}/studies/{study}/instances", headers={"Accept": DICOM_JSON})
    assert instances.status_code == 200, instances.text
    assert {i[SOP_UID]["Value"][0] for i in instances.json()} == sop_uids(files)
    metadata = httpx.get(f"{root}/studies/{study}/metadata", headers={"Accept": DICOM_JSON})
    assert metadata.status_code == 200, metadata.text
    assert {i[SOP_UID]["Value"][0] for i in metadata.json()} == sop_uids(files)


def store_one(server: Server, path: Path, calling: str) -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CT)
    assoc = ae.associate(server.host, server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established, f"{calling} was not accepted"
    try:
        status = assoc.send_c_store(dcmread(path))
        return -1 if status is None or "Status" not in status else int(status.Status)
    finally:
        assoc.release()


def test_eighty_concurrent_stores_then_one_query_finds_all_eighty(
    server: Server, tmp_path: Path
) -> None:
    files, study = series(tmp_path, 80)
    callers = [f"RYW{number % 8:02d}" for number in range(len(files))]  # 8 modalities
    with ThreadPoolExecutor(16) as pool:  # 16 associations at a time, under the per-peer cap
        statuses = list(
            pool.map(lambda job: store_one(server, *job), zip(files, callers, strict=True))
        )
    assert statuses == [0x0000] * 80
    found = find_stored(server, "IMAGE", 80, StudyInstanceUID=study)
    assert {match.SOPInstanceUID for match in found} == sop_uids(files)


# -- the index stopped, then back ---------------------------------------------------------

BOUND = 1.0


@pytest.fixture
def split(tmp_path: Path, shared_stack: servers.Stack | None) -> Iterator[dict[str, Server]]:
    """ingest, qr and index as three processes on the same stores (one data directory on
    the embedded stores), qr's barrier bounded at ``BOUND`` seconds."""
    env = {**isolated_env(shared_stack), "MICROPACS_READ_BARRIER__TIMEOUT": str(BOUND)}
    data = tmp_path / "data"
    running = {
        name: start_server(data, env=env, command=("run", name))
        for name in ("index", "ingest", "qr")
    }
    yield running
    for process in running.values():
        process.stop()


def barrier_count(qr: Server, outcome: str) -> float:
    metrics = httpx.get(f"{qr.http}/metrics").text
    pattern = rf'micropacs_read_barrier_total{{outcome="{outcome}",reader="qr"}} (\S+)'
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


def test_with_the_index_stopped_a_query_answers_within_the_bound_then_holds_again(
    split: dict[str, Server], tmp_path: Path
) -> None:
    ingest, qr = split["ingest"], split["qr"]
    first, study = series(tmp_path / "first", 2)
    storescu(ingest, first)
    # A new index joins its group first (seconds on Kafka); queries meanwhile may time out.
    wait_indexed(qr, "IMAGE", 2, StudyInstanceUID=study)
    timeouts = barrier_count(qr, "timeout")
    second = in_study(tmp_path / "second", 1, study)
    storescu(ingest, second)
    find_stored(qr, "IMAGE", 3, StudyInstanceUID=study)  # at once, the index running
    assert barrier_count(qr, "timeout") == timeouts

    split["index"].stop()
    later = in_study(tmp_path / "later", 2, study)
    storescu(ingest, later)  # acknowledged: on the bus, not yet in the catalog
    started = time.monotonic()
    found = find_matches(qr, "IMAGE", StudyInstanceUID=study)
    waited = time.monotonic() - started
    assert len(found) == 3  # what the catalog holds, not an error
    assert BOUND <= waited < BOUND + 3
    assert barrier_count(qr, "timeout") == timeouts + 1
    ready = httpx.get(f"{qr.http}/readyz")
    assert ready.status_code == 200  # a lagging index does not take qr out of service
    assert ready.json()["index_behind_offsets"]["instance.stored"] >= 2

    split["index"] = start_server(
        tmp_path / "data", env=split["index"].env, command=("run", "index")
    )
    # A restarted index catches up; until it has joined its group (seconds on Kafka) the
    # polls below may time out at the barrier, and are counted as such.
    wait_indexed(qr, "IMAGE", 5, StudyInstanceUID=study)
    timeouts = barrier_count(qr, "timeout")
    again = in_study(tmp_path / "again", 1, study)
    storescu(ingest, again)
    find_stored(qr, "IMAGE", 6, StudyInstanceUID=study)  # at once: the barrier holds again
    assert barrier_count(qr, "timeout") == timeouts
