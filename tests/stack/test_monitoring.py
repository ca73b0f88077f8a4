"""Debian's Prometheus scrapes a running micropacs: the series dashboards and alerts use appear,
and the alert rules load."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from micropacs.service_list import SERVICES
from stack import servers
from tests import dicomdata
from tests.integration.peers import findscu, free_port, storescu, wait_indexed
from tests.integration.server import start_server

pytestmark = pytest.mark.slow

EXPECTED = [
    'up{job="micropacs"} == 1',
    "micropacs_ready == 1",
    'micropacs_ingest_instances_total{status="0x0000"} >= 3',
    "micropacs_ingest_stored_bytes_total > 0",
    "micropacs_ingest_store_seconds_count >= 3",
    "micropacs_ingest_object_store_seconds_count >= 3",
    "micropacs_ingest_publish_seconds_count >= 3",
    'micropacs_dimse_associations_total{result="accepted"} >= 1',
    'micropacs_dimse_operations_total{service="ingest", operation="C-STORE", status="0x0000"} >= 3',
    'micropacs_dimse_operations_total{service="qr", operation="C-FIND", status="0x0000"} >= 1',
    "micropacs_index_upserts_total >= 3",
    "micropacs_index_consumer_lag_events >= 0",
    "micropacs_qr_query_seconds_count >= 1",
    "micropacs_qr_object_store_seconds_count >= 1",
    "micropacs_data_dir_free_bytes > 0",
    "process_resident_memory_bytes > 0",
]


def test_prometheus_scrapes_the_series_dashboards_and_alerts_use(tmp_path: Path) -> None:
    reason = servers.available()
    if reason:
        pytest.skip(reason)
    server = start_server(tmp_path / "data")
    ports = servers.Ports(prometheus=free_port())
    run_dir = tmp_path / "prometheus"
    run_dir.mkdir()
    try:
        files = dicomdata.make_study(tmp_path / "ct", 3, "CT")
        storescu(server, files)
        wait_indexed(server, "IMAGE", 3)
        findscu(server, {"QueryRetrieveLevel": "STUDY", "PatientID": ""}, tmp_path / "find")
        study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        assert httpx.get(f"{server.http}/dicom-web/studies/{study}").status_code == 200
        servers.start_prometheus(run_dir, ports, targets=(f"127.0.0.1:{server.http_port}",))
        api = f"http://127.0.0.1:{ports.prometheus}/api/v1"
        missing = list(EXPECTED)
        deadline = time.monotonic() + 90
        while missing and time.monotonic() < deadline:
            time.sleep(1)
            for query in list(missing):
                try:
                    answer = httpx.get(f"{api}/query", params={"query": query}).json()
                except httpx.HTTPError:
                    break  # Prometheus still starting
                if answer.get("data", {}).get("result"):
                    missing.remove(query)
        assert missing == [], f"series never appeared: {missing}"
        groups = httpx.get(f"{api}/rules").json()["data"]["groups"]
        alerts = {rule["name"] for group in groups for rule in group["rules"]}
        assert {"MicropacsServiceDown", "MicropacsIngestFailures"} <= alerts
        firing = httpx.get(f"{api}/alerts").json()["data"]["alerts"]
        assert [a for a in firing if a["state"] == "firing"] == []  # a healthy PACS pages nobody
    finally:
        servers.stop_one(run_dir, "prometheus")
        server.stop()


def test_metrics_count_what_every_worker_process_did(tmp_path: Path) -> None:
    """With DICOM worker processes on one port, /metrics of the parent sums all of them."""
    server = start_server(tmp_path / "data", env={"MICROPACS_DICOM__WORKERS": "2"})
    try:
        deadline = time.monotonic() + 30
        # A worker runs the services that answer on the DICOM port, and logs their names.
        started = '"services": ' + json.dumps([s.name for s in SERVICES if s.dicom])
        while started not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)  # the worker process is listening once it logs its start
        assert started in server.log(), "the worker never started"
        files = dicomdata.make_study(tmp_path / "ct", 8, "CT")
        for path in files:  # one association each: the kernel spreads them over the processes
            storescu(server, [path])
        wait_indexed(server, "IMAGE", 8)
        text = httpx.get(f"{server.http}/metrics").text
        stored = [
            line
            for line in text.splitlines()
            if line.startswith('micropacs_ingest_instances_total{status="0x0000"}')
        ]
        assert len(stored) == 1 and float(stored[0].split()[-1]) == 8, stored
        operations = [
            line
            for line in text.splitlines()
            if line.startswith("micropacs_dimse_operations_total")
            and 'operation="C-STORE"' in line
            and 'status="0x0000"' in line
        ]
        assert sum(float(line.split()[-1]) for line in operations) == 8
        ready = [line for line in text.splitlines() if line.startswith("micropacs_ready")]
        assert ready == ["micropacs_ready 1.0"]  # one series, not a 0 per worker process
    finally:
        server.stop()
