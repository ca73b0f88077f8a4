"""Shared pieces of the benchmarks: peers, timing, process memory, result files."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import Dataset

from micropacs.dicom.json_model import to_json
from micropacs.events import InstanceStored

RESULTS = Path(__file__).parent / "results"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # PS3.4 C.6.2
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "p95_ms": round(percentile(samples, 95) * 1000, 2),
        "n": len(samples),
    }


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (and its threads) now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes(pid: int) -> int:
    """High-water mark of a process's resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its living descendants, every thread
    (/proc/PID/stat fields 14 and 15; a descendant that exited is not counted)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def start_serve(
    data_dir: Path, dicom_port: int, http_port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "micropacs",
            "serve",
            "--data-dir",
            str(data_dir),
            "--dicom-port",
            str(dicom_port),
            "--http-port",
            str(http_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(data_dir.parent / "serve.log").open("wb"),
        # Its own HL7 port, so that two benchmarks' servers never meet on 2575.
        env={
            **os.environ,
            "MICROPACS_LOG_LEVEL": "WARNING",
            "MICROPACS_WORKLIST__HL7_PORT": "0",
            **(env or {}),
        },
        start_new_session=True,
    )
    wait_port(dicom_port)
    wait_port(http_port)  # last to open: with workers, once they are ready too
    return process


def wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({name: result}, indent=2))


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def find_association(port: int) -> Any:
    """A Study Root C-FIND association with micropacs on ``port``, TCP_NODELAY set."""
    from pynetdicom import AE, evt

    from micropacs.dimse.sockets import set_nodelay

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(STUDY_ROOT_FIND)
    # pynetdicom leaves Nagle on: without this each C-FIND waits for a delayed ACK.
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="MICROPACS", evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)]
    )
    if not assoc.is_established:
        raise RuntimeError(f"no association with micropacs on port {port}")
    return assoc


def synthetic_stored(
    ds: Dataset, i: int, received_at: str, key_prefix: str = "x"
) -> InstanceStored:
    """The ``instance.stored`` event of synthetic header ``ds`` (number ``i``), as the
    benchmarks that fill a catalog write it: no object behind it, a fixed sender."""
    return InstanceStored(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        study_instance_uid=ds.StudyInstanceUID,
        patient_id=ds.PatientID,
        issuer_of_patient_id="",
        object_key=f"{key_prefix}/{i}.dcm",
        size=0,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="BENCH",
        called_ae="MICROPACS",
        site="bench",
        storage_group="default",
        received_at=received_at,
        header=to_json(ds),
    )
