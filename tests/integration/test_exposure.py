"""What a server exposes: who may call its ports, and no dataset values in its log lines
(issue 10)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import association

from tests.integration.peers import StudyRootQueryRetrieveInformationModelFind, associate, echo
from tests.integration.server import Server, micropacs_env

MARKER = b"Sekr3t"


def test_an_identifier_that_fails_to_convert_is_logged_without_its_values(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Specific Character Set sent as FD with 6 bytes: pydicom's error quotes the bytes.
    identifier = (
        b"\x08\x00\x05\x00FD\x06\x00" + MARKER
        + b"\x08\x00\x52\x00CS\x06\x00STUDY "
        + b"\x10\x00\x10\x00PN\x00\x00"
    )  # fmt: skip
    monkeypatch.setattr(association, "encode", lambda *_args, **_kwargs: identifier)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(server, [(model, [ExplicitVRLittleEndian])])
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_find(query, model)]
    finally:
        assoc.release()
    assert statuses and statuses[-1] >= 0xA000  # a failure, not Success or Pending
    monkeypatch.undo()
    assert echo(server) == 0x0000
    log = server.log()
    assert "C-FIND failed" in log
    assert MARKER.decode() not in log


def serve_on_every_address(
    data_dir: Path, env: dict[str, str], *, timeout: float = 60
) -> tuple[subprocess.Popen[str], str]:
    """``micropacs serve --host 0.0.0.0``: the process and its output once it is ready or gone."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "micropacs", "serve", "--data-dir", str(data_dir)),
            *("--host", "0.0.0.0", "--dicom-port", "0", "--http-port", "0"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=micropacs_env({"MICROPACS_AUTH__BACKEND": "local", **env}),
        start_new_session=True,
    )
    assert process.stdout is not None
    output = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            process.wait(10)
            process.stdout.close()
            return process, output
        output += line
        if " ready: " in line:
            return process, output
    stop(process)
    raise TimeoutError(f"micropacs serve neither started nor stopped:\n{output}")


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    if process.stdout is not None:
        process.stdout.close()


def test_dicom_on_the_network_admitting_any_caller_refuses_to_start(tmp_path: Path) -> None:
    process, output = serve_on_every_address(tmp_path / "data", {})
    if process.poll() is None:
        stop(process)
        pytest.fail(f"started with DICOM open to the network:\n{output}")
    assert process.returncode != 0
    assert "MICROPACS_DICOM__OPEN" in output and "MICROPACS_DICOM__STRICT_NODES" in output


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"MICROPACS_DICOM__OPEN": "true"}, "DICOM OPEN: any calling AE title on the network"),
        ({"MICROPACS_DICOM__STRICT_NODES": "true"}, "DICOM: registered nodes only"),
    ],
)
def test_dicom_on_the_network_starts_when_opened_or_closed_and_says_which(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    process, output = serve_on_every_address(tmp_path / "data", env)
    try:
        assert process.poll() is None, output
        assert said in output
    finally:
        stop(process)


def test_dicom_on_loopback_says_it_is_open_to_local_callers(server: Server) -> None:
    assert "DICOM open to local callers of any AE title" in server.log()


def test_hl7_on_the_network_without_an_allow_list_refuses_to_start(tmp_path: Path) -> None:
    started = subprocess.run(
        [
            *(sys.executable, "-m", "micropacs", "serve", "--data-dir", str(tmp_path / "data")),
            *("--host", "127.0.0.1", "--dicom-port", "0", "--http-port", "0"),
        ],
        capture_output=True,
        text=True,
        env=micropacs_env({"MICROPACS_WORKLIST__HL7_HOST": "0.0.0.0"}),
        timeout=120,
    )
    assert started.returncode != 0
    assert "MICROPACS_WORKLIST__HL7_ALLOWED_FROM" in started.stderr
    assert "Traceback" not in started.stderr
