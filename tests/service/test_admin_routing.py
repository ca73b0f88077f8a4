"""The admin API's routing routes over the real catalog's queues, behind the real gate.

Entries are put in the queues through the catalog's own methods; the router's senders are
not started (``index=False`` leaves every background task stopped), so what a test sees in
a queue is what the API made of it. Every role's answer is checked, a browser session's
retry needs its CSRF token, and each retry and cancel is on the audit topic. One test runs
the whole path: entries dead at a destination that was down, retried through the admin API,
sent by the running router to a DCMTK storescp.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from starlette.applications import Starlette
from starlette.middleware import Middleware

from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.principal import Role
from micropacs.config import AuthSettings
from micropacs.events import AUDIT, AuditRecorded
from micropacs.http import build_http_app
from micropacs.ports import ForwardEntry, ForwardState, Node
from micropacs.routing.rules import parse_rules
from tests.integration.peers import free_port, wait_for_port
from tests.service.conftest import HOST, Running, StartPacs, service_settings, wait_until
from tests.service.peers import ct_files, store
from tests.service.test_admin_sessions import PASSWORD, csrf_token, log_in
from tests.service.test_router import FAST

RULES = """\
rules:
  - name: ct-to-workstation
    match: {modality: CT, calling_ae: [CT1, CT2]}
    forward: [{destination: WS1}, {destination: ARCHIVE, transfer_syntax: jpeg2000-lossless}]
  - name: fix-station
    match: {attributes: {StationName: "OLD*"}}
    coerce: [{set: StationName, value: NEW}, {remove: OtherPatientIDs}]
"""
STUDY = "1.2.826.0.1.3680043.10.543.1"


@dataclass
class Api:
    pacs: Running
    app: Starlette
    tokens: dict[Role, dict[str, str]]
    rules_file: Path

    def call(self, method: str, path: str, role: Role | None, json: Any = None) -> httpx.Response:
        headers = self.tokens[role] if role else {}

        async def go() -> httpx.Response:
            async with self.client() as client:
                return await client.request(method, path, headers=headers, json=json)

        return self.pacs.loop_call(go())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://p")

    def enqueue(self, *entries: ForwardEntry) -> None:
        self.pacs.loop_call(self.pacs.catalog.enqueue_forwards(entries))

    def entries(self, destination: str) -> dict[str, ForwardEntry]:
        found = self.pacs.loop_call(self.pacs.catalog.forward_entries(destination, None, 100))
        return {entry.entry_id: entry for entry in found}

    def audited(self, count: int) -> list[AuditRecorded]:
        """The first ``count`` "api" records of the audit topic (read by a group of its own)."""

        async def read() -> list[AuditRecorded]:
            consumer = await self.pacs.bus.consumer(AUDIT, f"reader-{uuid.uuid4().hex}")
            found: list[AuditRecorded] = []
            deadline = time.monotonic() + 10
            try:
                while len(found) < count and time.monotonic() < deadline:
                    for record in await consumer.poll(100, 0.2):
                        event = AuditRecorded.from_bytes(record.value)
                        if event.kind == "api":
                            found.append(event)
            finally:
                await consumer.close()
            return found

        return self.pacs.loop_call(read())


def entry(
    entry_id: str,
    destination: str = "WS1",
    *,
    state: ForwardState = ForwardState.WAITING,
    age: float = 60.0,
    attempts: int = 0,
    error: str = "",
) -> ForwardEntry:
    """A queue entry that is not due for a day (no sender would take it anyway)."""
    now = time.time()
    number = sum(map(ord, entry_id))
    return ForwardEntry(
        entry_id=entry_id,
        destination=destination,
        sop_class_uid=str(CTImageStorage),
        sop_instance_uid=f"{STUDY}.1.{number}",
        series_instance_uid=f"{STUDY}.1",
        study_instance_uid=STUDY,
        object_key=f"objects/{entry_id}",
        transfer_syntax_uid=str(ExplicitVRLittleEndian),
        size=1000,
        rule="ct-to-workstation",
        enqueued_at=now - age,
        state=state,
        attempts=attempts,
        due_at=now + 86400,
        last_error=error,
    )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = service_settings(tmp_path / "data")
    settings.auth = AuthSettings(backend="local", session_key=SecretStr(secrets.token_urlsafe(32)))
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES, encoding="utf-8")
    settings.router.rules_file = rules_file
    pacs = Running(settings, index=False)
    try:
        gate = Middleware(
            Gate,
            authenticate=authenticator(settings, pacs.catalog),
            metrics_open=False,
            basic=False,
        )
        routes = [route for app in pacs.apps for route in app.web_routes()]
        app = build_http_app(pacs.registry, {}, routes, access=gate)
        credentials = pacs.admin.context.credentials

        async def tokens() -> dict[Role, dict[str, str]]:
            made = {}
            for role in Role:
                text, _ = await credentials.create_token(role, f"{role} routing")
                made[role] = {"Authorization": f"Bearer {text}"}
            await credentials.set_user("operator-1", PASSWORD, Role.OPERATOR)
            return made

        yield Api(pacs, app, pacs.loop_call(tokens()), rules_file)
    finally:
        pacs.close()


ROUTES = [
    ("GET", "/api/routing/queues", None),
    ("GET", "/api/routing/queues/WS1", None),
    ("POST", "/api/routing/queues/WS1/retry", {}),
    ("POST", "/api/routing/queues/WS1/cancel", {"state": "dead"}),
    ("GET", "/api/routing/rules", None),
]


def test_every_route_needs_credentials_and_changes_need_an_operator(api: Api) -> None:
    api.enqueue(entry("d1", state=ForwardState.DEAD, attempts=5, error="refused"))
    for method, path, body in ROUTES:
        missing = api.call(method, path, None, body)
        assert missing.status_code == 401, path
        assert missing.json()["error"]
        viewer = api.call(method, path, Role.VIEWER, body)
        if method == "GET":
            assert viewer.status_code == 200, (path, viewer.text)
        else:
            assert viewer.status_code == 403, path
            assert "viewer" in viewer.json()["error"]
    assert api.entries("WS1")["d1"].state is ForwardState.DEAD  # the viewer changed nothing
    assert api.call("POST", "/api/routing/queues/WS1/retry", Role.OPERATOR).status_code == 200
    assert api.entries("WS1")["d1"].state is ForwardState.WAITING


def test_queues_show_depth_age_and_the_routers_counts(api: Api) -> None:
    api.enqueue(
        entry("w1", age=300),
        entry("w2", age=30),
        entry("d1", state=ForwardState.DEAD, attempts=5),
        entry("a1", "OTHER", age=10),
    )
    queues = api.call("GET", "/api/routing/queues", Role.VIEWER).json()
    by_name = {queue["destination"]: queue for queue in queues}
    # ARCHIVE has no entry, but a rule names it.
    assert list(by_name) == ["ARCHIVE", "OTHER", "WS1"]
    ws1 = by_name["WS1"]
    assert (ws1["waiting"], ws1["dead"]) == (2, 1)
    assert 300 <= ws1["oldest_waiting_seconds"] < 3600
    assert ws1["oldest_waiting_at"].endswith("+00:00")
    # The router is built in this process: its counters are registered, nothing sent yet.
    assert (ws1["sent"], ws1["failed"], ws1["dead_lettered"]) == (0, 0, 0)
    archive = by_name["ARCHIVE"]
    assert (archive["waiting"], archive["dead"], archive["oldest_waiting_at"]) == (0, 0, None)


def test_a_destinations_entries_are_paged_and_filtered(api: Api) -> None:
    api.enqueue(
        entry("w1", age=300),
        entry("w2", age=200),
        entry("d1", state=ForwardState.DEAD, age=100, attempts=5, error="0xA700 (5 attempts)"),
    )
    every = api.call("GET", "/api/routing/queues/WS1", Role.VIEWER).json()
    assert [e["id"] for e in every] == ["w1", "w2", "d1"]  # oldest enqueued first
    dead = api.call("GET", "/api/routing/queues/WS1?state=dead", Role.VIEWER).json()
    assert [e["id"] for e in dead] == ["d1"]
    [shown] = dead
    assert shown["state"] == "dead" and shown["attempts"] == 5
    assert shown["last_error"] == "0xA700 (5 attempts)"
    assert shown["next_attempt_at"] is None
    assert shown["study_instance_uid"] == STUDY and shown["sop_instance_uid"].startswith(STUDY)
    waiting = api.call("GET", "/api/routing/queues/WS1?state=waiting&limit=1&offset=1", Role.VIEWER)
    [second] = waiting.json()
    assert second["id"] == "w2" and second["next_attempt_at"] is not None
    for bad in ("state=gone", "limit=0", "limit=100000", "offset=-1"):
        answer = api.call("GET", f"/api/routing/queues/WS1?{bad}", Role.VIEWER)
        assert answer.status_code == 422, bad
        assert answer.json()["error"]
    assert api.call("GET", "/api/routing/queues/NOBODY", Role.VIEWER).json() == []


def test_retry_and_cancel_change_only_what_they_name_and_are_audited(api: Api) -> None:
    api.enqueue(
        entry("w1"),
        entry("d1", state=ForwardState.DEAD, attempts=5),
        entry("d2", state=ForwardState.DEAD, attempts=5),
        entry("d3", state=ForwardState.DEAD, attempts=5),
        entry("x1", "OTHER", state=ForwardState.DEAD, attempts=5),
    )
    path = "/api/routing/queues/WS1"
    named = api.call("POST", f"{path}/retry", Role.OPERATOR, {"entries": ["d1"]})
    assert named.json() == {"retried": 1}
    queue = api.entries("WS1")
    assert queue["d1"].state is ForwardState.WAITING and queue["d1"].attempts == 0
    assert queue["d1"].due_at <= time.time()
    assert queue["d2"].state is ForwardState.DEAD
    every_dead = api.call("POST", f"{path}/retry", Role.OPERATOR, {})
    assert every_dead.json() == {"retried": 2}
    assert all(e.state is ForwardState.WAITING for e in api.entries("WS1").values())
    assert api.entries("OTHER")["x1"].state is ForwardState.DEAD  # another destination's

    one = api.call("POST", f"{path}/cancel", Role.OPERATOR, {"entries": ["w1", "nope"]})
    assert one.json() == {"canceled": 1}
    assert sorted(api.entries("WS1")) == ["d1", "d2", "d3"]
    refused = api.call("POST", f"{path}/cancel", Role.OPERATOR, {})
    assert refused.status_code == 422 and "state" in refused.json()["error"]
    assert len(api.entries("WS1")) == 3  # an empty body never empties a queue
    bad = api.call("POST", f"{path}/cancel", Role.OPERATOR, {"state": "old"})
    assert bad.status_code == 422
    none_dead = api.call("POST", f"{path}/cancel", Role.OPERATOR, {"state": "dead"})
    assert none_dead.json() == {"canceled": 0}
    rest = api.call("POST", f"{path}/cancel", Role.ADMINISTRATOR, {"state": "all"})
    assert rest.json() == {"canceled": 3}
    assert api.entries("WS1") == {}
    too_many = {"entries": [f"e{i}" for i in range(10_001)]}
    assert api.call("POST", f"{path}/retry", Role.OPERATOR, too_many).status_code == 422

    records = api.audited(5)
    assert [r.detail for r in records] == [
        "routing queue WS1: 1 named entries retried (1 changed)",
        "routing queue WS1: every dead entry retried (2 changed)",
        "routing queue WS1: 2 named entries canceled (1 removed)",
        "routing queue WS1: every dead entry canceled (0 removed)",
        "routing queue WS1: every entry canceled (3 removed)",
    ]
    assert {r.destination for r in records} == {"WS1"}
    assert records[0].role == "operator" and records[-1].role == "administrator"


def test_the_rules_are_listed_from_the_file_as_it_is(api: Api) -> None:
    listed = api.call("GET", "/api/routing/rules", Role.VIEWER).json()
    assert listed["file"] == str(api.rules_file) and listed["error"] == ""
    first, second = listed["rules"]
    assert first == {
        "name": "ct-to-workstation",
        "match": {"calling_ae": "CT1, CT2", "modality": "CT"},
        "forward": [
            {"destination": "WS1", "transfer_syntax": "as stored"},
            {"destination": "ARCHIVE", "transfer_syntax": "jpeg2000-lossless"},
        ],
        "coerce": [],
    }
    assert second["match"] == {"StationName": "OLD*"}
    assert second["coerce"] == ["set StationName to 'NEW'", "remove OtherPatientIDs"]
    api.rules_file.write_text("rules:\n  - name: broken\n", encoding="utf-8")
    broken = api.call("GET", "/api/routing/rules", Role.VIEWER).json()
    assert broken["rules"] == [] and "broken" in broken["error"]


def test_a_sessions_retry_needs_its_csrf_token(api: Api) -> None:
    api.enqueue(entry("d1", state=ForwardState.DEAD, attempts=5))

    async def walk() -> None:
        async with api.client() as browser:
            assert (await log_in(browser, "operator-1")).status_code == 303
            token = await csrf_token(browser)
            path = "/api/routing/queues/WS1/retry"
            refused = await browser.post(path, json={})
            assert refused.status_code == 403 and "CSRF token" in refused.json()["error"]
            done = await browser.post(path, json={}, headers={"X-CSRF-Token": token})
            assert done.status_code == 200 and done.json() == {"retried": 1}

    api.pacs.loop_call(walk())


def test_an_operators_retry_is_sent_by_the_running_router_to_a_real_storescp(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    rules = parse_rules("rules:\n  - {name: all, forward: [{destination: DICOMSRV}]}\n")
    pacs = start_pacs(rules=rules, router={**FAST, "max_attempts": 1})
    pacs.loop_call(pacs.catalog.put_node(Node("DICOMSRV", HOST, free_port())))  # nobody there
    files = ct_files(tmp_path / "ct", 2)
    assert store(pacs, *files) == [0, 0]

    def dead() -> list[ForwardEntry]:
        return pacs.loop_call(pacs.catalog.forward_entries("DICOMSRV", ForwardState.DEAD, 10))

    wait_until(lambda: len(dead()) == 2, 20, "both entries dead after one attempt")
    settings = pacs.settings.model_copy(deep=True)
    settings.auth.backend = "local"
    gate = Middleware(
        Gate, authenticate=authenticator(settings, pacs.catalog), metrics_open=False, basic=False
    )
    routes = [route for app in pacs.apps for route in app.web_routes()]
    app = build_http_app(pacs.registry, {}, routes, access=gate)
    operator, _ = pacs.loop_call(pacs.admin.context.credentials.create_token(Role.OPERATOR))

    async def call(method: str, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
            headers = {"Authorization": f"Bearer {operator}"}
            return await client.request(method, path, headers=headers, json={})

    def queue() -> dict[str, Any]:
        [only] = pacs.loop_call(call("GET", "/api/routing/queues")).json()
        return dict(only)

    # The router counts once it has written the outcome: poll until both agree.
    wait_until(lambda: queue()["dead_lettered"] == 2, 20, "both counted dead-lettered")
    assert (queue()["dead"], queue()["sent"], queue()["failed"]) == (2, 0, 2)

    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", "DICOMSRV", "-od", str(received), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_for_port(port, process)
        pacs.loop_call(pacs.catalog.put_node(Node("DICOMSRV", HOST, port)))
        time.sleep(2 * FAST["nodes_refresh"])  # no reading of the old address is kept
        retried = pacs.loop_call(call("POST", "/api/routing/queues/DICOMSRV/retry"))
        assert retried.json() == {"retried": 2}
        wait_until(lambda: len(list(received.iterdir())) == 2, 20, "both instances received")
        wait_until(
            lambda: pacs.loop_call(pacs.catalog.forward_queues()) == [], 20, "the queue empty"
        )
    finally:
        process.terminate()
        process.wait(10)
    wait_until(lambda: queue()["sent"] == 2, 20, "both counted sent")
    after = queue()
    assert (after["waiting"], after["dead"], after["failed"]) == (0, 0, 2)
