"""The admin REST API served over HTTP behind the authentication gate, as the runtime
serves it: roles, nodes, C-ECHO and send to a real DCMTK storescp, browse, ZIP download."""

from __future__ import annotations

import io
import os
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from starlette.middleware import Middleware

from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.principal import Role
from micropacs.events import AUDIT, AuditRecorded
from micropacs.http import HttpServer, build_http_app
from tests import dicomdata
from tests.integration.peers import free_port, wait_for_port
from tests.service.conftest import HOST, Running, StartPacs, wait_until
from tests.service.peers import ct_files, dataset_body, store


@pytest.fixture
def served(start_pacs: StartPacs) -> Iterator[tuple[Running, str]]:
    pacs = start_pacs()
    settings = pacs.settings.model_copy(deep=True)
    settings.auth.backend = "local"
    routes = [route for app in pacs.apps for route in app.web_routes()]
    gate = Middleware(
        Gate, authenticate=authenticator(settings, pacs.catalog), metrics_open=True, basic=True
    )
    app = build_http_app(pacs.registry, {}, routes, access=gate)
    server = HttpServer(app, HOST, 0, settings.http)

    async def start() -> int:
        return await server.start()

    port = pacs.loop_call(start())
    yield pacs, f"http://{HOST}:{port}"
    pacs.loop_call(server.stop())


def token(pacs: Running, role: Role) -> dict[str, str]:
    text, _ = pacs.loop_call(pacs.admin.context.credentials.create_token(role))
    return {"Authorization": f"Bearer {text}"}


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    folder = tmp_path / "received"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "-od", str(folder), "+xa", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_for_port(port, process)
        yield port, folder
    finally:
        process.terminate()
        process.wait(10)


def test_roles_are_enforced(served: tuple[Running, str]) -> None:
    pacs, base = served
    node = {"ae_title": "CT1", "host": "127.0.0.1", "port": 104}
    with httpx.Client(base_url=base) as client:
        missing = client.get("/api/nodes")
        assert missing.status_code == 401 and missing.json()["error"]
        viewer = token(pacs, Role.VIEWER)
        assert client.get("/api/nodes", headers=viewer).json() == []
        refused = client.post("/api/nodes", json=node, headers=viewer)
        assert refused.status_code == 403 and "viewer" in refused.json()["error"]
        operator = token(pacs, Role.OPERATOR)
        refused = client.post("/api/nodes", json=node, headers=operator)
        assert refused.status_code == 403 and "administrator" in refused.json()["error"]
        assert client.get("/api/users", headers=operator).status_code == 403
        assert client.get("/api/openapi.json", headers=viewer).json()["paths"]


def test_nodes_are_validated(served: tuple[Running, str]) -> None:
    pacs, base = served
    admin = token(pacs, Role.ADMINISTRATOR)
    with httpx.Client(base_url=base, headers=admin) as client:
        for bad in (
            {"ae_title": "A" * 17, "host": "h", "port": 104},
            {"ae_title": "BAD\\AE", "host": "h", "port": 104},
            {"ae_title": "CT1", "host": "h", "port": 70000},
            {"ae_title": "CT1", "host": "h", "port": 104, "allowed_from": ["not-a-cidr"]},
        ):
            answer = client.post("/api/nodes", json=bad)
            assert answer.status_code == 422, bad
            assert answer.json()["error"]
        full = {
            "ae_title": "CT1",
            "host": "ct1.example",
            "port": 11112,
            "tls": False,
            "issuer_of_patient_id": "HOSP",
            "issuer_of_accession_number": "RIS",
            "user_id": "ct",
            "storage_group": "ct",
            "ae_group": "diagnostic",
            "description": "CT console",
            "store": True,
            "query": False,
            "retrieve": True,
            "move_destination": False,
            "allowed_from": ["10.1.2.0/24"],
            "from_host": True,
            "tls_certificates": [],
        }
        assert client.post("/api/nodes", json=full).status_code == 201
        assert client.post("/api/nodes", json=full).status_code == 409
        assert client.get("/api/nodes/CT1").json() == full
        edited = {k: v for k, v in full.items() if k != "ae_title"} | {"port": 4006}
        assert client.put("/api/nodes/CT1", json=edited).json()["port"] == 4006
        assert client.put("/api/nodes/NOPE", json=edited).status_code == 404
        assert client.post("/api/nodes/NOPE/verify").status_code == 404
        assert client.delete("/api/nodes/CT1").status_code == 204
        assert client.delete("/api/nodes/CT1").status_code == 404


def test_verify_send_browse_and_download(
    served: tuple[Running, str], storescp: tuple[int, Path], tmp_path: Path
) -> None:
    pacs, base = served
    port, received = storescp
    files = ct_files(tmp_path / "study", 3)
    assert store(pacs, *files) == [0, 0, 0]
    from pydicom import dcmread

    study_uid = str(dcmread(files[0]).StudyInstanceUID)
    admin = token(pacs, Role.ADMINISTRATOR)
    with httpx.Client(base_url=base, headers=admin, timeout=30) as client:
        node = {"ae_title": "STORESCP", "host": HOST, "port": port}
        assert client.post("/api/nodes", json=node).status_code == 201
        echoed = client.post("/api/nodes/STORESCP/verify").json()
        assert echoed["reachable"] and echoed["status"] == 0 and echoed["round_trip_ms"] > 0
        closed = {"ae_title": "GONE", "host": HOST, "port": free_port()}
        assert client.post("/api/nodes", json=closed).status_code == 201
        gone = client.post("/api/nodes/GONE/verify").json()
        assert not gone["reachable"] and gone["status"] is None and gone["reason"]

        pacs.wait_indexed([str(dcmread(f).SOPInstanceUID) for f in files])
        studies = client.get("/api/studies", params={"limit": 10}).json()
        assert [s["StudyInstanceUID"] for s in studies["items"]] == [study_uid]
        assert client.get("/api/studies", params={"limit": 0}).status_code == 422
        assert client.get("/api/studies/1.2.x").status_code == 400
        detail = client.get(f"/api/studies/{study_uid}").json()
        assert detail["series"][0]["thumbnail"].endswith("/thumbnail")

        job = client.post(f"/api/studies/{study_uid}/send", json={"destination": "STORESCP"})
        assert job.status_code == 202
        job_id = job.json()["id"]

        def finished() -> dict[str, object] | None:
            shown: dict[str, object] = client.get(f"/api/jobs/{job_id}").json()
            return shown if shown["state"] in ("completed", "failed") else None

        done = wait_until(finished, 30, "the send job ended")
        assert done is not None
        assert done["state"] == "completed" and done["sent"] == 3 and done["failed"] == 0
        assert len(list(received.iterdir())) == 3
        unknown = client.post(f"/api/studies/{study_uid}/send", json={"destination": "NOPE"})
        assert unknown.status_code == 404

        archive = client.get(f"/api/studies/{study_uid}/archive")
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
            assert opened.testzip() is None
            members = {Path(name).stem: opened.read(name) for name in opened.namelist()}
        for path in files:
            # The stored Part 10 file: our File Meta, the received data set byte for byte.
            assert members[str(dcmread(path).SOPInstanceUID)].endswith(dataset_body(path))


def test_users_tokens_status_and_refusals(served: tuple[Running, str]) -> None:
    pacs, base = served
    admin = token(pacs, Role.ADMINISTRATOR)
    with httpx.Client(base_url=base, headers=admin) as client:
        created = client.post("/api/tokens", json={"role": "viewer", "description": "wall"})
        assert created.status_code == 201
        text, token_id = created.json()["token"], created.json()["name"]
        assert "token" not in client.get("/api/tokens").json()[0]
        as_new = {"Authorization": f"Bearer {text}"}
        assert client.get("/api/nodes", headers=as_new).status_code == 200
        assert client.get("/api/users", headers=as_new).status_code == 403
        assert client.delete(f"/api/tokens/{token_id}").status_code == 204
        assert client.get("/api/nodes", headers=as_new).status_code == 401

        user = {"name": "tech", "password": "a long password", "role": "viewer"}
        assert client.post("/api/users", json=user).status_code == 201
        assert client.post("/api/users", json=user).status_code == 409
        short = client.post("/api/users", json=user | {"name": "x", "password": "short"})
        assert short.status_code == 400 and "characters" in short.json()["error"]
        changed = client.put("/api/users/tech/role", json={"role": "operator"})
        assert changed.json()["role"] == "operator"
        assert client.put("/api/users/tech/role", json={"role": "god"}).status_code == 422
        assert client.delete("/api/users/tech").status_code == 204
        assert client.delete("/api/users/tech").status_code == 404

        status = client.get("/api/status").json()
        assert status["ready"] is True and status["catalog"]["studies"] == 0
        assert client.get("/api/studies", params={"limit": 5000}).status_code == 422
        assert client.get("/api/studies", params={"date_from": "2024"}).status_code == 422
        assert client.delete("/api/studies/not-a-uid").status_code == 400
        assert client.get("/api/jobs/nope").status_code == 404
    operator = token(pacs, Role.OPERATOR)
    with httpx.Client(base_url=base, headers=operator) as client:
        assert client.delete("/api/studies/1.2.3").status_code == 403
        assert client.get("/api/audit").status_code == 403


def test_search_and_worklist(served: tuple[Running, str], tmp_path: Path) -> None:
    pacs, base = served
    older = dicomdata.StudySpec(
        patient_name="Dvořák^Antonín", patient_id="CZ1", study_date="20230101", charset="ISO_IR 192"
    )
    newer = dicomdata.StudySpec(patient_name="Doe^Jane", patient_id="D2", study_date="20240601")
    files = [*ct_files(tmp_path / "a", 1, study=older), *ct_files(tmp_path / "b", 1, study=newer)]
    assert store(pacs, *files) == [0, 0]
    pacs.wait_indexed([str(dcmread(f).SOPInstanceUID) for f in files])
    operator = token(pacs, Role.OPERATOR)
    with httpx.Client(base_url=base, headers=operator) as client:
        every = client.get("/api/studies").json()
        assert [s["PatientID"] for s in every["items"]] == ["D2", "CZ1"]  # newest first
        czech = client.get("/api/studies", params={"patient_name": "Dvořák*"}).json()
        assert [s["PatientName"] for s in czech["items"]] == ["Dvořák^Antonín"]
        ranged = client.get("/api/studies", params={"date_from": "20240101"}).json()
        assert [s["PatientID"] for s in ranged["items"]] == ["D2"]
        paged = client.get("/api/studies", params={"limit": 1, "offset": 1}).json()
        assert paged["total"] == 2 and [s["PatientID"] for s in paged["items"]] == ["CZ1"]

        step = {
            "patient_id": "CZ1",
            "patient_name": "Dvořák^Antonín",
            "accession_number": "ACC9",
            "requested_procedure_id": "RP9",
            "modality": "CT",
            "station_ae_title": "CT1",
            "start_date": "20991231",
            "step_id": "S9",
        }
        scheduled = client.post("/api/scheduled-steps", json=step)
        assert scheduled.status_code == 201
        item_id = scheduled.json()["id"]
        assert (
            client.post("/api/scheduled-steps", json=step | {"modality": "ct!"}).status_code == 422
        )

        def listed() -> list[dict[str, object]]:
            found: list[dict[str, object]] = client.get(
                "/api/scheduled-steps", params={"accession": "ACC9"}
            ).json()
            return found

        assert wait_until(listed, 15, "the item listed")[0]["patient_name"] == "Dvořák^Antonín"
        assert client.post(f"/api/scheduled-steps/{item_id}/cancel").status_code == 200

        def canceled() -> bool:
            return bool(listed()) and listed()[0]["status"] == "CANCELED"

        wait_until(canceled, 15, "the item canceled")
        assert client.post(f"/api/scheduled-steps/{item_id}/cancel").status_code == 409
        assert client.post("/api/scheduled-steps/nope/cancel").status_code == 404
        assert client.get("/api/performed-steps").json() == []


def audit_records(pacs: Running, kinds: set[str], count: int) -> list[AuditRecorded]:
    """The first ``count`` records of those kinds on the audit topic (a group of its own)."""

    async def read() -> list[AuditRecorded]:
        consumer = await pacs.bus.consumer(AUDIT, f"reader-{uuid.uuid4().hex}")
        found: list[AuditRecorded] = []
        deadline = time.monotonic() + 10
        try:
            while len(found) < count and time.monotonic() < deadline:
                for record in await consumer.poll(100, 0.2):
                    event = AuditRecorded.from_bytes(record.value)
                    if event.kind in kinds:
                        found.append(event)
        finally:
            await consumer.close()
        return found

    return pacs.loop_call(read())


def test_reads_of_patient_data_are_audited(served: tuple[Running, str], tmp_path: Path) -> None:
    pacs, base = served
    files = ct_files(tmp_path / "ct", 2)
    assert store(pacs, *files) == [0, 0]
    first = dcmread(files[0])
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    pacs.wait_indexed([str(dcmread(f).SOPInstanceUID) for f in files])
    viewer = token(pacs, Role.VIEWER)
    with httpx.Client(base_url=base, headers=viewer) as client:
        patients = client.get("/api/patients").json()
        assert [each["PatientID"] for each in patients["items"]] == [first.PatientID]
        assert client.get("/api/studies", params={"patient_id": "nobody"}).json()["total"] == 0
        assert client.get("/api/studies").json()["total"] == 1
        assert client.get(f"/api/studies/{study_uid}").status_code == 200
        listed = client.get(f"/api/studies/{study_uid}/series/{series_uid}/instances")
        assert listed.status_code == 200
        # A refused or missing study is no read of patient data.
        assert client.get("/api/studies/1.2.3.999").status_code == 404
    records = audit_records(pacs, {"query", "retrieve"}, 6)
    shown = [(r.kind, r.detail, r.study_uids) for r in records]
    assert shown[:5] == [
        ("query", "patients searched: 1 matches", ()),
        ("query", "studies searched: 0 matches", ()),
        ("query", "studies searched: 1 matches", (study_uid,)),
        ("retrieve", "study viewed", (study_uid,)),
        ("query", "a series' instances listed", (study_uid,)),
    ], shown
    assert len(records) == 5, "the missing study is not recorded"
    assert {(r.actor, r.role) for r in records} == {(records[0].actor, "viewer")}
    assert all(r.source == "127.0.0.1" for r in records)


def test_a_series_and_an_instance_are_deleted_through_the_api(
    served: tuple[Running, str], tmp_path: Path
) -> None:
    pacs, base = served
    files = ct_files(tmp_path / "ct", 3)
    assert store(pacs, *files) == [0, 0, 0]
    headers = [dcmread(f) for f in files]
    uids = [str(h.SOPInstanceUID) for h in headers]
    study, series = str(headers[0].StudyInstanceUID), str(headers[0].SeriesInstanceUID)
    pacs.wait_indexed(uids)
    instance_path = f"/api/studies/{study}/series/{series}/instances/{uids[0]}"
    with httpx.Client(base_url=base, headers=token(pacs, Role.OPERATOR)) as operator:
        assert operator.delete(instance_path).status_code == 403
    admin = token(pacs, Role.ADMINISTRATOR)
    with httpx.Client(base_url=base, headers=admin) as client:
        bad = client.delete(f"/api/studies/{study}/series/{series}/instances/not-a-uid")
        assert bad.status_code in (400, 422) and bad.json()["error"]
        one = client.delete(instance_path, params={"reason": "wrong side"})
        assert one.status_code == 202 and one.json()["instances"] == 1

        def listed() -> list[str]:
            answer = client.get(f"/api/studies/{study}/series/{series}/instances")
            if answer.status_code == 404:
                return []
            return [str(each["SOPInstanceUID"]) for each in answer.json()]

        wait_until(lambda: listed() == uids[1:], 15, "the instance gone from the series")
        rest = client.delete(f"/api/studies/{study}/series/{series}")
        assert rest.status_code == 202 and rest.json()["instances"] == 2
        wait_until(
            lambda: client.get(f"/api/studies/{study}").status_code == 404,
            15,
            "the study gone with its only series",
        )
        assert client.delete(f"/api/studies/{study}/series/{series}").status_code == 404
    assert pacs.located(uids) == []
    records = audit_records(pacs, {"study-deleted"}, 2)
    assert [(r.detail.split(" ")[0], r.study_uids) for r in records] == [
        ("instance", (study,)),
        ("series", (study,)),
    ]
