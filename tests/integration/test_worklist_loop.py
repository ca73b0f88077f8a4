"""The department's loop through ``micropacs serve``: an order scheduled (by HL7 over MLLP,
by the worklist API, by ``micropacs worklist``), found by the modality with DCMTK's
``findscu -W``, performed through MPPS with pynetdicom, and gone from the worklist once
completed or removed; and every HL7 message acknowledged before a SIGKILL applied after
the restart.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hl7.mllp import open_hl7_connection
from pydicom.uid import generate_uid
from pynetdicom import AE

from services.worklist.mpps import MPPS_SOP_CLASS
from stack import servers
from tests.integration.conftest import isolated_env
from tests.integration.server import Server, micropacs, start_server, wait_ready
from tests.integration.test_auth import bearer, token
from tests.integration.test_worklist import STEP, findscu_w
from tests.unit.hl7_samples import orm
from tests.worklistdata import completed, in_progress, scheduled

ITEMS = "/api/worklist/items"
UTF8 = "UNICODE UTF-8"
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 30) -> T:
    """``probe()`` once it returns something truthy (the index applies events soon after)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {found!r} after {timeout}s")
        time.sleep(0.2)


def send_hl7(port: int, text: str) -> Any:
    """One message over MLLP with python-hl7's client; its parsed ACK."""

    async def go() -> Any:
        reader, writer = await open_hl7_connection("127.0.0.1", port, encoding="utf-8")
        try:
            writer.writeblock(text.encode())
            await writer.drain()
            return await asyncio.wait_for(reader.readmessage(), 15)
        finally:
            writer.close()
            await writer.wait_closed()

    return asyncio.run(go())


def item_json(station: str, **values: Any) -> dict[str, Any]:
    """A worklist item as a script would POST it (DICOM JSON, PS3.18 F.2)."""
    item: dict[str, Any] = scheduled("x", station=station, **values).dataset
    return item


@pytest.fixture(scope="module")
def clinic(
    tmp_path_factory: pytest.TempPathFactory, shared_stack: servers.Stack | None
) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("loop") / "data", env=isolated_env(shared_stack))
    yield server
    server.stop()


def test_the_ready_line_names_the_hl7_port(clinic: Server) -> None:
    assert clinic.hl7_port > 0
    assert f"HL7 on port {clinic.hl7_port}" in clinic.log()


def test_an_order_by_hl7_is_found_performed_and_then_gone(clinic: Server, tmp_path: Path) -> None:
    ack = send_hl7(clinic.hl7_port, orm("NW", charset=UTF8, msg_id="LOOP1"))
    assert str(ack["MSA.F1"]) == "AA"
    query = {
        "PatientID": "PAT-7",
        "PatientName": "",
        "AccessionNumber": "",
        "StudyInstanceUID": "",
        f"{STEP}.ScheduledProcedureStepID": "",
        f"{STEP}.Modality": "",
    }
    (answer,) = findscu_w(clinic, query, tmp_path / "scheduled")  # the ACK came first
    assert str(answer.PatientName).startswith("Novák^Jiří")  # typed by nobody at the modality
    assert answer.PatientID == "PAT-7"
    assert answer.AccessionNumber == "ACC-1"
    assert answer.StudyInstanceUID == "1.2.3.4.5"
    assert answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "SPS-1"

    ae = AE(ae_title="CT01")
    ae.add_requested_context(MPPS_SOP_CLASS)
    assoc = ae.associate(clinic.host, clinic.dicom_port, ae_title=clinic.ae_title)
    assert assoc.is_established
    try:
        uid = generate_uid()
        status, _ = assoc.send_n_create(
            in_progress(study="1.2.3.4.5", step_id="SPS-1"), MPPS_SOP_CLASS, uid
        )
        assert status is not None and int(status.Status) == 0x0000
        started = {**query, f"{STEP}.ScheduledProcedureStepStatus": "STARTED"}
        assert findscu_w(clinic, started, tmp_path / "started")
        status, _ = assoc.send_n_set(completed(), MPPS_SOP_CLASS, uid)
        assert status is not None and int(status.Status) == 0x0000
    finally:
        assoc.release()
    done = {**query, f"{STEP}.ScheduledProcedureStepStatus": "COMPLETED"}
    assert findscu_w(clinic, done, tmp_path / "done")
    assert findscu_w(clinic, query, tmp_path / "after") == []  # a completed step is not offered


def test_an_item_posted_is_found_listed_and_removed(clinic: Server, tmp_path: Path) -> None:
    body = item_json("API1", patient="Doe^Jane", patient_id="API-P1", accession="API-A1")
    del body["0020000D"]  # StudyInstanceUID: generated
    posted = httpx.post(f"{clinic.http}{ITEMS}", json=body)
    assert posted.status_code == 201, posted.text
    item = posted.json()
    assert posted.headers["location"] == f"{clinic.http}{ITEMS}/{item['id']}"
    assert item["status"] == "SCHEDULED"
    study = item["dataset"]["0020000D"]["Value"][0]
    assert study.startswith("2.25.")

    query = {"PatientName": "", "StudyInstanceUID": "", f"{STEP}.ScheduledStationAETitle": "API1"}
    (answer,) = findscu_w(clinic, query, tmp_path / "posted")
    assert answer.PatientName == "Doe^Jane" and answer.StudyInstanceUID == study

    shown = httpx.get(posted.headers["location"])
    assert shown.status_code == 200 and shown.json()["dataset"] == item["dataset"]
    for filters, expected in (
        ({"ScheduledStationAETitle": "API1"}, [item["id"]]),
        ({"PatientName": "Doe^J*", "00100020": "API-P1"}, [item["id"]]),
        (
            {"ScheduledStationAETitle": "API1", "ScheduledProcedureStepStartDate": "20260301-"},
            [item["id"]],
        ),
        ({"ScheduledStationAETitle": "API1", "ScheduledProcedureStepStartDate": "20260302-"}, []),
        ({"ScheduledStationAETitle": "API1", "status": "COMPLETED"}, []),
        ({"ScheduledStationAETitle": "API1", "offset": "1"}, []),
    ):
        listed = httpx.get(f"{clinic.http}{ITEMS}", params=filters)
        assert listed.status_code == 200, listed.text
        assert [found["id"] for found in listed.json()] == expected, filters

    removed = httpx.delete(posted.headers["location"])
    assert removed.status_code == 204
    assert findscu_w(clinic, query, tmp_path / "removed") == []
    assert httpx.get(posted.headers["location"]).status_code == 404
    assert httpx.delete(posted.headers["location"]).status_code == 404
    assert httpx.get(f"{clinic.http}{ITEMS}/no-such-item").status_code == 404


def _without(tag: str) -> dict[str, Any]:
    body = item_json("BAD1")
    del body[tag]
    return body


def _step_with(tag: str, value: Any) -> dict[str, Any]:
    body = item_json("BAD1")
    body["00400100"]["Value"][0][tag] = value
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (json.dumps(["a"]).encode(), "not a JSON object"),
        (_without("00400100"), "exactly one item"),
        (_without("00100020"), "PatientID"),
        (_without("00080050"), "AccessionNumber"),
        (_step_with("00400002", {"vr": "DA", "Value": ["20261301"]}), "DA"),
        (_step_with("00400001", {"vr": "AE", "Value": ["A" * 17]}), "maximum length of 16"),
        (_step_with("00400009", {"vr": "LO", "Value": ["S1"]}), "the dictionary says SH"),
        (_step_with("00400020", {"vr": "CS", "Value": ["COMPLETED"]}), "SCHEDULED"),
        ({**item_json("BAD1"), "00100010": {"vr": "PN", "Value": ["Doe^John"]}}, "PN value"),
        ({**item_json("BAD1"), "00100020": {"vr": "LO", "Value": ["a\\b"]}}, "backslash"),
        ({**item_json("BAD1"), "0020000D": {"vr": "UI", "Value": ["1.02"]}}, "UI"),
        ({**item_json("BAD1"), "00091010": {"vr": "LO", "Value": ["x"]}}, "private"),
        ({**item_json("BAD1"), "00420011": {"vr": "OB"}}, "binary values"),
        ({**item_json("BAD1"), "00100020": {"vr": "LO", "Values": ["x"]}}, "unknown members"),
        ({**item_json("BAD1"), "patient": {"vr": "LO"}}, "not a tag"),
    ],
)
def test_a_bad_item_is_refused_with_its_reason(
    clinic: Server, body: dict[str, Any] | bytes, reason: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(
        f"{clinic.http}{ITEMS}", content=content, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["error"]


def test_a_body_of_another_type_or_too_large_is_refused(clinic: Server) -> None:
    wrong = httpx.post(
        f"{clinic.http}{ITEMS}", content=b"<item/>", headers={"content-type": "text/xml"}
    )
    assert wrong.status_code == 415
    huge = item_json("BAD1")
    huge["00081030"] = {"vr": "LO", "Value": ["x" * 64] * 2000}
    assert httpx.post(f"{clinic.http}{ITEMS}", json=huge).status_code == 413
    listed = httpx.get(f"{clinic.http}{ITEMS}", params={"NoSuchKeyword": "x"})
    assert listed.status_code == 400 and "NoSuchKeyword" in listed.json()["error"]
    listed = httpx.get(f"{clinic.http}{ITEMS}", params={"StudyInstanceUID": "1.2.x"})
    assert listed.status_code == 400 and "UID" in listed.json()["error"]


def test_micropacs_worklist_add_list_remove(clinic: Server, tmp_path: Path) -> None:
    def cli(*args: str, check: bool = True) -> Any:
        return micropacs("worklist", *args, data_dir=clinic.data_dir, env=clinic.env, check=check)

    path = tmp_path / "item.json"
    path.write_text(json.dumps(item_json("CLI1", date="20260401", accession="CLI-A1")))
    item_id = cli("add", str(path)).stdout.strip()
    assert item_id

    def listed(*flags: str) -> list[str]:
        return [line.split("\t")[0] for line in cli("list", *flags).stdout.splitlines()]

    assert item_id in listed("--station", "CLI1")
    (row,) = cli("list", "--station", "CLI1").stdout.splitlines()
    assert row.split("\t") == [item_id, "SCHEDULED", "20260401", "080000", "CLI1", "CT", "CLI-A1"]
    assert item_id in listed("--date", "20260401-20260402")
    assert item_id not in listed("--date", "20260402-")
    query = {"AccessionNumber": "CLI-A1"}
    assert findscu_w(clinic, query, tmp_path / "added")

    assert cli("remove", item_id).stdout.strip() == f"removed {item_id}"
    assert item_id not in listed("--station", "CLI1")
    unknown = cli("remove", item_id, check=False)
    assert unknown.returncode == 1 and "no worklist item" in unknown.stderr

    path.write_text(json.dumps(_without("00100020")))
    refused = cli("add", str(path), check=False)
    assert refused.returncode == 1 and "PatientID" in refused.stderr
    path.write_text("{")
    assert cli("add", str(path), check=False).returncode == 1


def test_writing_needs_the_operator_role(tmp_path: Path, server_env: dict[str, str]) -> None:
    server = start_server(tmp_path / "data", env={**server_env, "MICROPACS_AUTH__BACKEND": "local"})
    try:
        url = f"{server.http}{ITEMS}"
        body = item_json("AUTH1")
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.get(url).status_code == 401
        viewer = bearer(token(server, "viewer"))
        assert httpx.post(url, json=body, headers=viewer).status_code == 403
        assert httpx.get(url, headers=viewer).status_code == 200
        operator = bearer(token(server, "operator"))
        posted = httpx.post(url, json=body, headers=operator)
        assert posted.status_code == 201
        assert httpx.delete(posted.headers["location"], headers=viewer).status_code == 403
    finally:
        server.stop()


def _order(number: int) -> str:
    """An ORM^O01 NW of its own order (ORC-3/OBR-3), message control ID and study."""
    text = orm("NW", charset=UTF8, msg_id=f"K{number}", zds=f"ZDS|1.2.3.9.{number}^MICROPACS")
    return text.replace("FL-1", f"FL-K{number}").replace("|PL-1|", "||")  # keyed by filler


def test_every_acknowledged_message_is_applied_after_a_sigkill(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    server = start_server(tmp_path / "data", env=server_env)
    acked: list[int] = []
    stop = threading.Event()

    async def stream() -> None:
        reader, writer = await open_hl7_connection("127.0.0.1", server.hl7_port, encoding="utf-8")
        try:
            number = 0
            while not stop.is_set():
                number += 1
                writer.writeblock(_order(number).encode())
                await writer.drain()
                ack = await asyncio.wait_for(reader.readmessage(), 15)
                if str(ack["MSA.F1"]) == "AA":
                    acked.append(number)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass  # the server died under us: what it acknowledged must survive
        finally:
            writer.close()

    sender = threading.Thread(target=lambda: asyncio.run(stream()))
    sender.start()
    try:
        eventually(lambda: len(acked) >= 20, timeout=60)
        server.kill()  # SIGKILL, mid-stream
    finally:
        stop.set()
        sender.join(30)
    assert not sender.is_alive()
    applied = list(acked)
    assert len(applied) >= 20

    restarted = start_server(server.data_dir, env=server_env)
    try:
        wait_ready(restarted)

        def missing() -> list[int]:
            return [
                n
                for n in applied
                if httpx.get(f"{restarted.http}{ITEMS}/FL-K{n}:SPS-1").status_code != 200
            ]

        eventually(lambda: missing() == [] or None, timeout=60)
        answers = httpx.get(
            f"{restarted.http}{ITEMS}", params={"PatientID": "PAT-7", "limit": "100000"}
        ).json()
        assert {a["id"] for a in answers} >= {f"FL-K{n}:SPS-1" for n in applied}
    finally:
        restarted.stop()
