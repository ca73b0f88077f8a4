"""Every DICOM listener answers C-ECHO, whatever services it runs (PS3.4 A): a modality
verifies its worklist provider and its Storage Commitment SCP, which a deployment runs as
processes of their own behind addresses of their own, before it relies on them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.peers import dcmtk
from tests.integration.server import start_server


@pytest.mark.parametrize("service", ["qr", "worklist", "router"])
def test_a_process_of_one_dicom_service_answers_a_c_echo(
    tmp_path: Path, server_env: dict[str, str], service: str
) -> None:
    server = start_server(tmp_path / "data", env=server_env, command=("run", service))
    try:
        dcmtk(
            "echoscu", "-aec", server.ae_title, "-aet", "MODALITY",
            server.host, str(server.dicom_port),
        )  # fmt: skip
        metrics = httpx.get(f"{server.http}/metrics", timeout=10).text
    finally:
        server.stop()
    counted = (
        "micropacs_dimse_operations_total{"
        f'operation="C-ECHO",service="{service}",status="0x0000"}} 1.0'
    )
    assert counted in metrics
