"""The command line (import, nodes) and the HTTP endpoints of a running server."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydicom import dcmread

from tests import dicomdata
from tests.integration.peers import find_stored, storescu
from tests.integration.server import Server, micropacs, wait_ready


def test_import_stores_dicom_and_skips_the_rest(fresh_server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    files = dicomdata.make_study(folder / "nested", 5, modality="MR")
    (folder / "README.txt").write_text("not DICOM")
    (folder / "DICOMDIR-like.bin").write_bytes(b"\x00" * 300)
    result = micropacs("import", str(folder), data_dir=fresh_server.data_dir, env=fresh_server.env)
    assert "stored 5, skipped 2 non-DICOM, failed 0" in result.stdout
    assert all(p.exists() for p in files)  # copied, never moved
    study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    find_stored(fresh_server, "IMAGE", 5, StudyInstanceUID=study)


def test_nodes_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    micropacs(
        "nodes",
        "add",
        "CT_ROOM2",
        "10.1.2.3",
        "104",
        "--description",
        "CT console",
        "--ae-group",
        "diagnostic",
        "--issuer-of-patient-id",
        "HOSP",
        data_dir=data,
    )
    micropacs("nodes", "add", "RT_PLAN", "10.1.2.9", "4006", data_dir=data)
    listed = micropacs("nodes", "list", data_dir=data).stdout
    assert "CT_ROOM2" in listed and "10.1.2.3" in listed and "CT console" in listed
    assert "RT_PLAN" in listed
    micropacs("nodes", "remove", "RT_PLAN", data_dir=data)
    assert "RT_PLAN" not in micropacs("nodes", "list", data_dir=data).stdout
    missing = micropacs("nodes", "remove", "RT_PLAN", data_dir=data, check=False)
    assert missing.returncode != 0 and "no node" in missing.stderr
    bad = micropacs("nodes", "add", "X", "h", "99999", data_dir=data, check=False)
    assert bad.returncode != 0


def test_health_readiness_and_metrics(server: Server, tmp_path: Path) -> None:
    wait_ready(server)
    assert httpx.get(f"{server.http}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.http}/readyz").json()
    assert ready["status"] == "ready"
    assert {"blob_store", "event_bus", "catalog"} <= set(ready["checked"])
    storescu(server, dicomdata.make_study(tmp_path, 2, modality="CT"))
    metrics = httpx.get(f"{server.http}/metrics").text
    assert 'micropacs_ingest_instances_total{status="0x0000"}' in metrics
    assert "micropacs_qr_query_seconds" in metrics
    assert "process_resident_memory_bytes" in metrics
