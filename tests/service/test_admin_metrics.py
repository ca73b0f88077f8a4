"""The admin service's own metrics, read from /metrics as Prometheus scrapes them: requests
by route template (never a UID), send jobs to a real DCMTK storescp by outcome and their
instances, deletions requested by level (and recorded, by the audit trail's counters)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from starlette.middleware import Middleware

from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.principal import Role
from micropacs.http import HttpServer, build_http_app
from tests.integration.peers import free_port, wait_for_port
from tests.service.conftest import HOST, Running, StartPacs, wait_until
from tests.service.peers import ct_files, store

Labels = frozenset[tuple[str, str]]


@pytest.fixture
def served(start_pacs: StartPacs) -> Iterator[tuple[Running, str]]:
    pacs = start_pacs()
    settings = pacs.settings.model_copy(deep=True)
    settings.auth.backend = "local"
    routes = [route for app in pacs.apps for route in app.web_routes()]
    gate = Middleware(
        Gate, authenticate=authenticator(settings, pacs.catalog), metrics_open=True, basic=True
    )
    server = HttpServer(
        build_http_app(pacs.registry, {}, routes, access=gate), HOST, 0, settings.http
    )

    async def start() -> int:
        return await server.start()

    port = pacs.loop_call(start())
    yield pacs, f"http://{HOST}:{port}"
    pacs.loop_call(server.stop())


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[int]:
    folder = tmp_path / "received"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(folder), "+xa", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def samples(client: httpx.Client) -> dict[str, dict[Labels, float]]:
    """Every sample of /metrics by name, then by its labels."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    found: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def value(found: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    return found.get(name, {}).get(frozenset(labels.items()), 0.0)


def test_requests_send_jobs_and_deletions_are_counted(
    served: tuple[Running, str], storescp: int, tmp_path: Path
) -> None:
    pacs, base = served
    files = ct_files(tmp_path / "study", 2)
    assert store(pacs, *files) == [0, 0]
    study_uid = str(dcmread(files[0]).StudyInstanceUID)
    pacs.wait_indexed([str(dcmread(f).SOPInstanceUID) for f in files])
    text, _ = pacs.loop_call(pacs.admin.context.credentials.create_token(Role.ADMINISTRATOR))
    admin = {"Authorization": f"Bearer {text}"}
    with httpx.Client(base_url=base, timeout=30) as client:
        before = samples(client)
        assert client.get(f"/api/studies/{study_uid}", headers=admin).status_code == 200
        assert client.get("/api/studies/1.2.x", headers=admin).status_code == 400
        assert client.get("/api/no-such-route", headers=admin).status_code == 404
        assert client.get(f"/studies/{study_uid}", headers=admin).status_code == 200
        node = {"ae_title": "STORESCP", "host": HOST, "port": storescp}
        assert client.post("/api/nodes", json=node, headers=admin).status_code == 201
        closed = {"ae_title": "GONE", "host": HOST, "port": free_port()}
        assert client.post("/api/nodes", json=closed, headers=admin).status_code == 201
        jobs = [
            client.post(
                f"/api/studies/{study_uid}/send", json={"destination": ae}, headers=admin
            ).json()["id"]
            for ae in ("STORESCP", "GONE")
        ]

        def finished() -> bool:
            states = [client.get(f"/api/jobs/{j}", headers=admin).json()["state"] for j in jobs]
            return all(state in ("completed", "failed") for state in states)

        wait_until(finished, 30, "both send jobs ended")
        assert client.delete(f"/api/studies/{study_uid}", headers=admin).status_code == 202
        after = samples(client)

    def grew(name: str, by: float = 1.0, **labels: str) -> None:
        change = value(after, name, **labels) - value(before, name, **labels)
        assert change == by, f"{name}{labels} grew by {change}, not {by}"

    requests = "micropacs_admin_requests_total"
    grew(requests, route="/api/studies/{study_uid}", method="GET", status="200")
    grew(requests, route="/api/studies/{study_uid}", method="GET", status="400")
    grew(requests, route="other", method="GET", status="404")
    grew(requests, route="/studies/{study}", method="GET", status="200")
    grew(requests, by=2, route="/api/nodes", method="POST", status="201")
    grew(requests, by=2, route="/api/studies/{study_uid}/send", method="POST", status="202")
    grew(requests, route="/api/studies/{study_uid}", method="DELETE", status="202")
    seconds = "micropacs_admin_request_seconds_count"
    assert value(after, seconds, route="/api/studies/{study_uid}") >= 3
    grew("micropacs_admin_send_jobs_started_total", by=2)
    grew("micropacs_admin_send_jobs_finished_total", outcome="completed")
    grew("micropacs_admin_send_jobs_finished_total", outcome="failed")
    grew("micropacs_admin_sent_instances_total", by=2, result="sent")
    grew("micropacs_admin_deletions_requested_total", level="study")
    grew("micropacs_audit_recorded_total", kind="study-deleted")
    # No label of the admin's series carries a UID or the path a client sent.
    for name, series in after.items():
        if name.startswith("micropacs_admin_"):
            for labels in series:
                for _, shown in labels:
                    assert study_uid not in shown and "1.2.x" not in shown, (name, labels)
