"""Failures of the real servers: nothing answered Success is ever lost.

Each test runs its own Kafka, MinIO and FerretDB, stops one of them while
storescu sends, starts it again, and checks that every instance storescu saw
acknowledged is stored, indexed and retrievable.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from stack import servers
from tests import dicomdata
from tests.integration.peers import DCMTK_ENV, dcmtk, wait_indexed
from tests.integration.server import Server, start_server

SUCCESS = re.compile(r"Received Store Response \(Success\)")
FAILURE = re.compile(r"Received Store Response \((?!Success)")

pytestmark = pytest.mark.slow


def stack_server(stack: servers.Stack, data_dir: Path) -> Server:
    env = {**stack.env, "MICROPACS_KAFKA__PUBLISH_TIMEOUT": "3"}
    if importlib.util.find_spec("micropacs.adapters.mongo") is None:
        del env["MICROPACS_STORAGE__CATALOG_URL"]  # until the MongoDB catalog exists
    return start_server(data_dir, env=env)


def send_through_outage(
    server: Server,
    files: list[Path],
    stop_after: int,
    restart_after_failures: int,
    stop: Callable[[], None],
    start: Callable[[], None],
) -> tuple[list[str], int]:
    """storescu sends ``files``; the backend is stopped after ``stop_after`` successes and
    started again after ``restart_after_failures`` failures. Returns the acknowledged files
    and the number of failures storescu saw."""
    sender = subprocess.Popen(
        [
            "storescu",
            "-v",
            "-nh",
            "-aec",
            server.ae_title,
            server.host,
            str(server.dicom_port),
            *map(str, files),
        ],
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert sender.stdout is not None
    acknowledged: list[str] = []
    failures, current, stopped, restarted = 0, "", False, False
    for line in sender.stdout:
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif SUCCESS.search(line):
            acknowledged.append(current)
            if len(acknowledged) == stop_after and not stopped:
                stop()
                stopped = True
        elif FAILURE.search(line):
            failures += 1
            if failures == restart_after_failures and not restarted:
                start()
                restarted = True
    sender.stdout.close()
    sender.wait(120)
    assert stopped and restarted, "the outage did not happen while storescu was sending"
    return acknowledged, failures


def assert_all_retrievable(server: Server, acknowledged: list[str], tmp_path: Path) -> None:
    uids = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in acknowledged}
    study = dcmread(acknowledged[0], stop_before_pixels=True).StudyInstanceUID
    found = wait_indexed(server, "IMAGE", len(uids), timeout=120, StudyInstanceUID=study)
    assert uids <= {m.SOPInstanceUID for m in found}
    out = tmp_path / "retrieved"
    out.mkdir()
    dcmtk(
        "getscu",
        "-S",
        "-aec",
        server.ae_title,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        server.host,
        str(server.dicom_port),
    )
    assert uids <= {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}


def test_kafka_outage_fails_stores_and_loses_nothing(stack: servers.Stack, tmp_path: Path) -> None:
    files = dicomdata.make_ct_series(tmp_path / "ct", 60, rows=64, cols=64)
    server = stack_server(stack, tmp_path / "data")
    try:
        acknowledged, failures = send_through_outage(
            server,
            files,
            stop_after=15,
            restart_after_failures=3,
            stop=lambda: servers.stop_one(stack.run_dir, "kafka"),
            start=lambda: servers.start_kafka(stack.run_dir, stack.ports),
        )
        assert failures >= 3
        assert len(acknowledged) > 15, "stores must succeed again once Kafka is back"
        metrics = httpx.get(f"{server.http}/metrics").text
        assert f'micropacs_ingest_instances_total{{status="0xA700"}} {float(failures)}' in metrics
        assert_all_retrievable(server, acknowledged, tmp_path)
    finally:
        server.stop()


def test_minio_outage_fails_stores_and_loses_nothing(stack: servers.Stack, tmp_path: Path) -> None:
    files = dicomdata.make_ct_series(tmp_path / "ct", 60, rows=64, cols=64)
    server = stack_server(stack, tmp_path / "data")

    def start_minio() -> None:
        servers.start_minio(stack.run_dir, stack.ports)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if servers._http_ok(f"http://127.0.0.1:{stack.ports.minio}/minio/health/cluster"):
                    return
            except OSError:
                time.sleep(0.2)

    try:
        acknowledged, failures = send_through_outage(
            server,
            files,
            stop_after=15,
            restart_after_failures=3,
            stop=lambda: servers.stop_one(stack.run_dir, "minio"),
            start=start_minio,
        )
        assert failures >= 3
        assert len(acknowledged) > 15, "stores must succeed again once MinIO is back"
        metrics = httpx.get(f"{server.http}/metrics").text
        assert f'micropacs_ingest_instances_total{{status="0xA700"}} {float(failures)}' in metrics
        assert_all_retrievable(server, acknowledged, tmp_path)
    finally:
        server.stop()
