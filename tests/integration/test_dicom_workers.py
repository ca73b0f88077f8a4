"""DICOM worker processes (``--workers``): the parent hands each connection to the least
busy process (:mod:`micropacs.dimse.handoff`), so held associations spread evenly, and a
worker that dies leaves the others and the parent serving."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from tests import dicomdata
from tests.integration.peers import storescu, wait_indexed
from tests.integration.server import Server, start_server

VERIFICATION = "1.2.840.10008.1.1"
WORKERS = 3


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def established_on(pid: int, port: int) -> int:
    """TCP connections process ``pid`` holds whose local port is ``port``, established."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "data", env={"MICROPACS_DICOM__WORKERS": str(WORKERS)})
    try:
        yield running
    finally:
        running.stop()


def associate(server: Server) -> Association:
    ae = AE(ae_title="WORKERTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(server.host, server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    return assoc


def test_held_associations_spread_over_every_process(server: Server) -> None:
    processes = [server.process.pid, *children(server.process.pid)]
    assert len(processes) == WORKERS
    with ExitStack() as stack:
        for _ in range(2 * WORKERS):
            assoc = associate(server)
            stack.callback(assoc.release)
        held = [established_on(pid, server.dicom_port) for pid in processes]
    # The kernel's hash put two or three of six on one process and none on another.
    assert held == [2] * WORKERS, held


def test_a_worker_that_dies_leaves_the_others_serving(server: Server, tmp_path: Path) -> None:
    first, *_ = children(server.process.pid)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.5)
    files = dicomdata.make_study(tmp_path / "ct", 2 * WORKERS, "CT")
    for path in files:  # one association each, every one handed somewhere alive
        storescu(server, [path])
    wait_indexed(server, "IMAGE", len(files))
