"""Failures of the real servers: nothing answered Success is ever lost.

Each test runs its own Kafka, MinIO and FerretDB, stops one of them while
storescu sends, starts it again, and checks that every instance storescu saw
acknowledged is stored, indexed and retrievable.
"""

from __future__ import annotations

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
    return start_server(data_dir, env={**stack.env, "MICROPACS_KAFKA__PUBLISH_TIMEOUT": "3"})


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


def test_index_killed_mid_batch_leaves_a_complete_catalog(
    stack: servers.Stack, tmp_path: Path
) -> None:
    """kill -9 the index consumer while it works through a backlog, restart it: every
    instance is indexed once, with the right counts."""
    env = {**stack.env}
    files = dicomdata.make_ct_series(tmp_path / "ct", 400, rows=32, cols=32)
    study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    ingest = start_server(tmp_path / "ingest", env=env, command=("run", "ingest"))
    qr = start_server(tmp_path / "qr", env=env, command=("run", "qr"))
    try:
        dcmtk(
            "storescu",
            "-aec",
            ingest.ae_title,
            ingest.host,
            str(ingest.dicom_port),
            *map(str, files),
        )
        index = start_server(
            tmp_path / "index",
            env={**env, "MICROPACS_INDEX__BATCH_SIZE": "20"},
            command=("run", "index"),
        )
        deadline = time.monotonic() + 60
        while "micropacs_index_upserts_total 0.0" in httpx.get(f"{index.http}/metrics").text:
            assert time.monotonic() < deadline, "the index never started writing"
            time.sleep(0.05)
        index.kill()  # SIGKILL, mid-backlog
        index = start_server(tmp_path / "index2", env=env, command=("run", "index"))
        try:
            found = wait_indexed(qr, "IMAGE", len(files), timeout=120, StudyInstanceUID=study)
            uids = [m.SOPInstanceUID for m in found]
            assert len(uids) == len(set(uids)) == len(files)
            studies = wait_indexed(
                qr, "STUDY", 1, StudyInstanceUID=study, NumberOfStudyRelatedInstances=""
            )
            assert int(studies[0].NumberOfStudyRelatedInstances) == len(files)
        finally:
            index.stop()
    finally:
        ingest.stop()
        qr.stop()


def test_poison_event_goes_to_the_dead_letter_topic(stack: servers.Stack, tmp_path: Path) -> None:
    """An event the index cannot process lands in the dead-letter topic; the consumer
    goes on with the next one."""
    import asyncio
    import json

    from micropacs.adapters.factory import open_event_bus
    from micropacs.events import DEAD_LETTER, INSTANCE_STORED

    env = {**stack.env}
    server = start_server(tmp_path / "data", env=env)
    try:

        async def poison() -> None:
            bus = await open_event_bus(env["MICROPACS_STORAGE__BUS_URL"])
            try:
                await bus.publish(INSTANCE_STORED, "1.2.3", b"{not json at all")
            finally:
                await bus.close()

        asyncio.run(poison())
        files = dicomdata.make_ct_series(tmp_path / "ct", 3, rows=32, cols=32)
        dcmtk(
            "storescu",
            "-aec",
            server.ae_title,
            server.host,
            str(server.dicom_port),
            *map(str, files),
        )
        study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        wait_indexed(server, "IMAGE", 3, StudyInstanceUID=study)

        async def dead_letters() -> list[dict[str, object]]:
            bus = await open_event_bus(env["MICROPACS_STORAGE__BUS_URL"])
            consumer = await bus.consumer(DEAD_LETTER, "test-reader")
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    records = await consumer.poll(10, 1.0)
                    if records:
                        return [json.loads(r.value) for r in records]
                return []
            finally:
                await consumer.close()
                await bus.close()

        letters = asyncio.run(dead_letters())
        assert len(letters) == 1
        assert letters[0]["source_topic"] == INSTANCE_STORED
        assert "not JSON" in str(letters[0]["reason"])
        metrics = httpx.get(f"{server.http}/metrics").text
        assert "micropacs_index_dead_letters_total 1.0" in metrics
    finally:
        server.stop()
