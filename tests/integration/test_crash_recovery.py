"""SIGKILL while storescu sends: everything answered Success survives the restart."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from tests import dicomdata
from tests.integration.peers import DCMTK_ENV, dcmtk, wait_indexed
from tests.integration.server import start_server

SUCCESS = re.compile(r"Received Store Response \(Success\)")
SENDING = re.compile(r"Sending Store Request \(MsgID \d+, ([A-Z]+)\)")


@pytest.mark.slow
def test_sigkill_during_storescu_loses_nothing_acknowledged(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    files = dicomdata.make_ct_series(tmp_path / "series", 300, rows=256, cols=256)
    data_dir = tmp_path / "data"
    server = start_server(data_dir, env=server_env)
    sender = subprocess.Popen(
        [
            "storescu",
            "-v",
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
    log_lines: list[str] = []
    assert sender.stdout is not None
    acknowledged = 0
    for line in sender.stdout:
        log_lines.append(line)
        if SUCCESS.search(line):
            acknowledged += 1
            if acknowledged == 100:
                server.kill()
                break
    sender.stdout.read()
    sender.stdout.close()
    sender.wait(60)
    assert acknowledged == 100, "".join(log_lines[-20:])

    # storescu -v logs "Sending file: PATH" before each request, so each Success pairs
    # with the file sent just before it.
    acked_files: list[str] = []
    current = None
    for line in log_lines:
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif SUCCESS.search(line) and current:
            acked_files.append(current)
    assert len(acked_files) == 100

    restarted = start_server(data_dir, env=server_env)
    try:
        uids = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in acked_files}
        study = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
        found = wait_indexed(restarted, "IMAGE", len(uids), timeout=60, StudyInstanceUID=study)
        assert uids <= {m.SOPInstanceUID for m in found}
        out = tmp_path / "back"
        out.mkdir()
        dcmtk(
            "getscu",
            "-S",
            "-aec",
            restarted.ae_title,
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            restarted.host,
            str(restarted.dicom_port),
        )
        back = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in out.iterdir()}
        assert uids <= back
    finally:
        restarted.stop()
