"""Instance Availability Notifications from a real ``micropacs serve``: a study stored with
DCMTK storescu is notified by N-CREATE to a pynetdicom IAN SCP registered as a node, once
its quiet period has passed, even when serve is killed (-9) between the store and then."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from pydicom import dcmread

from tests import dicomdata
from tests.ianpeer import IanScp, Received, ian_scp
from tests.integration.peers import storescu
from tests.integration.server import Server, micropacs, start_server

PENDING = re.compile(r'micropacs_router_ian_pending_notices\{destination="RIS"\} (\S+)')


def ian_env(server_env: dict[str, str], quiet: float) -> dict[str, str]:
    env = {
        **server_env,
        "MICROPACS_IAN__DESTINATIONS": '["RIS"]',
        "MICROPACS_IAN__QUIET_PERIOD": str(quiet),
        "MICROPACS_IAN__CHECK_INTERVAL": "0.2",
    }
    if prefix := server_env.get("MICROPACS_KAFKA__TOPIC_PREFIX"):
        # A group of its own on a shared Kafka, as the index's (tests.integration.conftest).
        env["MICROPACS_IAN__GROUP"] = f"ian-{prefix.rstrip('.')}"
    return env


def study(folder: Path, count: int) -> tuple[dicomdata.StudySpec, list[Path]]:
    spec = dicomdata.StudySpec(accession_number="ACC-IAN-9", patient_id="PID-IAN-9")
    series = dicomdata.SeriesSpec()
    folder.mkdir(parents=True, exist_ok=True)
    files = [
        dicomdata.write(
            dicomdata.ct_image(spec, series, instance_number=n, rows=64, cols=64),
            folder / f"ct{n}.dcm",
        )
        for n in range(1, count + 1)
    ]
    return spec, files


def wait_notices(scp: IanScp, count: int, timeout: float, server: Server) -> list[Received]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(got := scp.notices()) >= count:
            return got
        time.sleep(0.1)
    raise AssertionError(
        f"{len(scp.notices())} of {count} notices after {timeout}s:\n{server.log()}"
    )


def pending(server: Server) -> float:
    found = PENDING.search(httpx.get(f"{server.http}/metrics", timeout=10).text)
    return float(found.group(1)) if found else 0.0


def check_content(notice: Received, spec: dicomdata.StudySpec, files: list[Path]) -> None:
    ds = notice.attributes
    assert ds.StudyInstanceUID == spec.study_instance_uid
    assert (ds.AccessionNumber, ds.PatientID) == ("ACC-IAN-9", "PID-IAN-9")
    [series] = ds.ReferencedSeriesSequence
    stored = {(str(f.SOPClassUID), str(f.SOPInstanceUID)) for f in map(dcmread, files)}
    assert {
        (str(s.ReferencedSOPClassUID), str(s.ReferencedSOPInstanceUID))
        for s in series.ReferencedSOPSequence
    } == stored
    assert {(s.InstanceAvailability, s.RetrieveAETitle) for s in series.ReferencedSOPSequence} == {
        ("ONLINE", "MICROPACS")
    }
    assert notice.calling_ae == "MICROPACS"


def test_a_study_stored_with_storescu_is_notified_to_the_ris(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    spec, files = study(tmp_path / "in", 3)
    with ian_scp("RIS") as scp:
        micropacs("nodes", "add", "RIS", "127.0.0.1", str(scp.port), data_dir=data, env=server_env)
        server = start_server(data, env=ian_env(server_env, quiet=2.0))
        try:
            storescu(server, files)
            [notice] = wait_notices(scp, 1, 60, server)
            check_content(notice, spec, files)
        finally:
            server.stop()


def test_a_notice_pending_when_serve_is_killed_is_sent_after_the_restart(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    data = tmp_path / "data"
    spec, files = study(tmp_path / "in", 2)
    env = ian_env(server_env, quiet=20.0)
    with ian_scp("RIS") as scp:
        micropacs("nodes", "add", "RIS", "127.0.0.1", str(scp.port), data_dir=data, env=server_env)
        server = start_server(data, env=env)
        try:
            storescu(server, files)
            deadline = time.monotonic() + 15
            while pending(server) < 1:
                assert time.monotonic() < deadline, f"no notice pending:\n{server.log()}"
                time.sleep(0.1)
            assert scp.notices() == [], "sent within the quiet period"
        finally:
            server.kill()
        restarted = start_server(data, env=env)
        try:
            [notice] = wait_notices(scp, 1, 90, restarted)
            check_content(notice, spec, files)
        finally:
            restarted.stop()
