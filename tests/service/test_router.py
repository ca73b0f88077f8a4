"""The router built with its ``build(...)`` inside the in-process services: rules choose the
destinations, each destination's queue is sent by C-STORE to real pynetdicom SCPs, failures
back off and end dead, and the queues' routes list, retry and cancel behind the gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import (
    AllTransferSyntaxes,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
)
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer
from starlette.middleware import Middleware

from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.local import LocalCredentials
from micropacs.auth.principal import Role
from micropacs.events import INSTANCE_STORED, InstanceStored
from micropacs.http import HttpServer, build_http_app
from micropacs.iocm import KEY_OBJECT_SELECTION
from micropacs.ports import ForwardEntry, ForwardState, Node
from micropacs.routing.rules import RuleSet, parse_rules
from tests import dicomdata
from tests.integration.peers import free_port
from tests.iocmdata import rejection_kos
from tests.service.conftest import HOST, Running, StartPacs, wait_until
from tests.service.outages import sqlite_write_lock
from tests.service.peers import SCU_AE, TIMEOUT, ct_files, sop_instance_of, store

RULES = """
rules:
  - name: ct-from-the-scu
    match: {calling_ae: SERVICE*, modality: CT, attributes: {StudyDescription: '*THORAX*'}}
    forward: [{destination: WS1}]
  - name: radiotherapy
    match: {ae_group: radiotherapy}
    forward: [{destination: RTPLAN}]
  - name: everything-to-the-archive
    forward: [{destination: ARCHIVE, transfer_syntax: jpeg2000-lossless}]
"""
FAST = {
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "nodes_refresh": 0.05,
    "stats_interval": 0.1,
}
"""Router settings that retry within a test's patience."""


@dataclass
class Destination:
    """A storage SCP that records what it received and answers ``status``."""

    ae_title: str
    port: int = 0
    status: int = 0x0000
    received: dict[str, str] = field(default_factory=dict)
    """Transfer syntax of each SOP Instance UID stored."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_store(self, event: evt.Event) -> int:
        if self.status == 0x0000:
            with self.lock:
                self.received[sop_instance_of(event)] = str(event.context.transfer_syntax)
        return self.status

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@pytest.fixture
def destinations() -> Iterator[dict[str, Destination]]:
    """Three SCPs accepting CT and MR in any transfer syntax, by AE title."""
    found: dict[str, Destination] = {}
    servers: list[tuple[AE, ThreadedAssociationServer]] = []
    for title in ("WS1", "RTPLAN", "ARCHIVE"):
        destination = found[title] = Destination(title)
        ae = AE(ae_title=title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
        for sop_class in (CTImageStorage, MRImageStorage, KEY_OBJECT_SELECTION):
            ae.add_supported_context(sop_class, AllTransferSyntaxes)
        server = ae.start_server(
            (HOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, destination.on_store)]
        )
        assert isinstance(server, ThreadedAssociationServer)
        destination.port = int(server.server_address[1])
        servers.append((ae, server))
    try:
        yield found
    finally:
        for ae, _ in servers:
            ae.shutdown()


def register(pacs: Running, title: str, port: int, group: str = "") -> None:
    pacs.loop_call(pacs.catalog.put_node(Node(title, HOST, port, ae_group=group)))


def move_node(pacs: Running, title: str, port: int) -> None:
    """Register ``title`` at a new address and wait until no router can still hold the
    old one: a reading of the registry is kept ``nodes_refresh`` seconds, so after twice
    that every reading is either expired or taken after the change."""
    register(pacs, title, port)
    time.sleep(2 * FAST["nodes_refresh"])


def start(
    start_pacs: StartPacs,
    rules: str | RuleSet,
    busy_timeout: float | None = None,
    **router: object,
) -> Running:
    parsed = parse_rules(rules) if isinstance(rules, str) else rules
    return start_pacs(rules=parsed, router={**FAST, **router}, busy_timeout=busy_timeout)


def uids_of(files: list[Path]) -> set[str]:
    return {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files}


def test_rules_choose_the_destinations_and_the_syntax(
    start_pacs: StartPacs, destinations: dict[str, Destination], tmp_path: Path
) -> None:
    pacs = start(start_pacs, RULES)
    for title, destination in destinations.items():
        register(pacs, title, destination.port)
    register(pacs, SCU_AE, 104, group="diagnostic")
    thorax = ct_files(tmp_path / "ct", 3, study=dicomdata.StudySpec(study_description="THORAX"))
    head = ct_files(tmp_path / "head", 2, study=dicomdata.StudySpec(study_description="HEAD"))
    mr = dicomdata.write(dicomdata.mr_image(rows=32, cols=32), tmp_path / "mr.dcm")
    assert store(pacs, *thorax, *head) == [0] * 5
    assert store(pacs, mr, sop_class=MRImageStorage) == [0]

    archive, ws1 = destinations["ARCHIVE"], destinations["WS1"]
    wait_until(lambda: archive.count() == 6, what="the archive got all six")
    wait_until(lambda: ws1.count() == 3, what="the workstation got the thorax CT")
    assert set(ws1.received) == uids_of(thorax)
    assert set(ws1.received.values()) == {ExplicitVRLittleEndian}  # as stored
    assert set(archive.received.values()) == {JPEG2000Lossless}
    assert destinations["RTPLAN"].count() == 0  # the SCU's group is diagnostic
    wait_until(lambda: pacs.loop_call(pacs.catalog.forward_queues()) == [], what="queues empty")
    assert pacs.metric("micropacs_router_sent_total", destination="ARCHIVE") == 6
    assert pacs.metric("micropacs_router_events_total", outcome="queued") == 6


def test_a_refusing_destination_backs_off_dies_and_never_holds_up_another(
    start_pacs: StartPacs, destinations: dict[str, Destination], tmp_path: Path
) -> None:
    rules = "rules:\n  - {name: all, forward: [{destination: WS1}, {destination: ARCHIVE}]}\n"
    pacs = start(start_pacs, rules, max_attempts=3)
    ws1, archive = destinations["WS1"], destinations["ARCHIVE"]
    ws1.status = 0xA700  # out of resources, every time
    for destination in (ws1, archive):
        register(pacs, destination.ae_title, destination.port)
    files = ct_files(tmp_path / "ct", 4)
    assert store(pacs, *files) == [0] * 4
    wait_until(lambda: archive.count() == 4, what="the archive got everything")
    wait_until(
        lambda: pacs.metric("micropacs_router_sent_total", destination="ARCHIVE") == 4,
        what="the archive's sends recorded",
    )

    def dead() -> list[ForwardEntry]:
        found = pacs.loop_call(pacs.catalog.forward_entries("WS1", ForwardState.DEAD, 10))
        return found if len(found) == 4 else []

    entries = wait_until(dead, timeout=30, what="every WS1 entry dead")
    assert {e.attempts for e in entries} == {3}
    assert all("0xA700" in e.last_error for e in entries)
    assert pacs.metric("micropacs_router_failed_total", destination="WS1") == 12
    assert pacs.metric("micropacs_router_dead_lettered_total", destination="WS1") == 4
    assert pacs.metric("micropacs_router_failing_since_seconds", destination="WS1") > 0
    assert pacs.metric("micropacs_router_failing_since_seconds", destination="ARCHIVE") == 0
    wait_until(
        lambda: pacs.metric("micropacs_router_dead_entries", destination="WS1") == 4,
        what="the dead gauge",
    )


def test_without_rules_every_event_is_unmatched_and_nothing_is_queued(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start_pacs(router=FAST)
    files = ct_files(tmp_path / "ct", 3)
    assert store(pacs, *files) == [0] * 3
    wait_until(
        lambda: pacs.metric("micropacs_router_events_total", outcome="unmatched") == 3,
        what="the router read the three events",
    )
    # Counted before the commit: the events are committed a moment later.
    wait_until(
        lambda: pacs.uncommitted(INSTANCE_STORED, "router") == [], what="the events committed"
    )
    assert pacs.loop_call(pacs.catalog.forward_queues()) == []


def test_a_rejection_note_is_forwarded_like_any_instance(
    start_pacs: StartPacs, destinations: dict[str, Destination], tmp_path: Path
) -> None:
    """IOCM: the archives a study went to get the note that rejects part of it, so that
    they hide those instances too."""
    pacs = start(start_pacs, "rules:\n  - {name: all, forward: [{destination: WS1}]}\n")
    ws1 = destinations["WS1"]
    register(pacs, "WS1", ws1.port)
    files = ct_files(tmp_path / "ct", 3)
    assert store(pacs, *files) == [0] * 3
    wait_until(lambda: ws1.count() == 3, what="the images forwarded")
    note = rejection_kos(files[:1])
    note_path = tmp_path / "rejection.dcm"
    note.save_as(note_path, enforce_file_format=True)
    assert store(pacs, note_path, sop_class=KEY_OBJECT_SELECTION) == [0]
    wait_until(lambda: ws1.count() == 4, what="the rejection note forwarded")
    assert str(note.SOPInstanceUID) in ws1.received


def test_an_unregistered_destination_waits_for_its_node(
    start_pacs: StartPacs, destinations: dict[str, Destination], tmp_path: Path
) -> None:
    pacs = start(start_pacs, "rules:\n  - {name: all, forward: [{destination: WS1}]}\n")
    files = ct_files(tmp_path / "ct", 2)
    assert store(pacs, *files) == [0, 0]

    def failed_once() -> bool:
        found = pacs.loop_call(pacs.catalog.forward_entries("WS1", None, 10))
        return any("not in the node registry" in e.last_error for e in found)

    wait_until(failed_once, what="a failed attempt")
    register(pacs, "WS1", destinations["WS1"].port)
    wait_until(lambda: destinations["WS1"].count() == 2, timeout=20, what="sent once registered")


@pytest.fixture
def served(start_pacs: StartPacs) -> Iterator[tuple[Running, str]]:
    """The router's routes behind the gate with local authentication, on a real port."""
    pacs = start(
        start_pacs, "rules:\n  - {name: all, forward: [{destination: DOWN}]}\n", max_attempts=1
    )
    settings = pacs.settings.model_copy(deep=True)
    settings.auth.backend = "local"
    gate = Middleware(
        Gate, authenticate=authenticator(settings, pacs.catalog), metrics_open=True, basic=True
    )
    app = build_http_app(pacs.registry, {}, pacs.router.web_routes(), access=gate)
    server = HttpServer(app, HOST, 0, settings.http)

    async def begin() -> int:
        return await server.start()

    port = pacs.loop_call(begin())
    yield pacs, f"http://{HOST}:{port}"
    pacs.loop_call(server.stop())


def token(pacs: Running, role: Role) -> dict[str, str]:
    text, _ = pacs.loop_call(LocalCredentials(pacs.catalog).create_token(role))
    return {"Authorization": f"Bearer {text}"}


def test_operators_retry_and_cancel_what_viewers_list(
    served: tuple[Running, str], destinations: dict[str, Destination], tmp_path: Path
) -> None:
    pacs, base = served
    register(pacs, "DOWN", free_port())  # nothing listens there
    first = ct_files(tmp_path / "first", 3)
    assert store(pacs, *first) == [0] * 3

    def dead_count() -> int:
        return len(pacs.loop_call(pacs.catalog.forward_entries("DOWN", ForwardState.DEAD, 10)))

    wait_until(lambda: dead_count() == 3, what="dead after one attempt")
    viewer, operator = token(pacs, Role.VIEWER), token(pacs, Role.OPERATOR)
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/router/queues").status_code == 401
        listed = client.get("/router/queues", headers=viewer)
        assert listed.status_code == 200
        [queue] = listed.json()
        assert (queue["destination"], queue["dead"], queue["waiting"]) == ("DOWN", 3, 0)
        assert queue["failing_since"] is not None
        entries = client.get("/router/queues/DOWN", params={"state": "dead"}, headers=viewer)
        assert {e["sop_instance_uid"] for e in entries.json()} == uids_of(first)
        assert all("DOWN" in e["last_error"] for e in entries.json())
        bad = client.get("/router/queues/DOWN", params={"state": "gone"}, headers=viewer)
        assert bad.status_code == 400
        assert client.post("/router/queues/DOWN/retry").status_code == 401
        assert client.post("/router/queues/DOWN/retry", headers=viewer).status_code == 403
        assert client.post("/router/queues/DOWN/cancel", headers=viewer).status_code == 403

        # The node comes back at a new address; the operator retries every dead entry.
        move_node(pacs, "DOWN", destinations["WS1"].port)
        retried = client.post("/router/queues/DOWN/retry", headers=operator)
        assert retried.status_code == 200 and retried.json() == {"retried": 3}
        wait_until(lambda: destinations["WS1"].count() == 3, what="sent after the retry")
        assert set(destinations["WS1"].received) == uids_of(first)

        # Down again: the next ones die, and the operator cancels them.
        move_node(pacs, "DOWN", free_port())
        second = ct_files(tmp_path / "second", 2)
        assert store(pacs, *second) == [0, 0]
        wait_until(lambda: dead_count() == 2, what="dead again")
        refused = client.post("/router/queues/DOWN/cancel", headers=operator)
        assert refused.status_code == 400  # neither entries nor a state: nothing is assumed
        one = client.get("/router/queues/DOWN", headers=viewer).json()[0]["id"]
        canceled = client.post(
            "/router/queues/DOWN/cancel", json={"entries": [one]}, headers=operator
        )
        assert canceled.json() == {"canceled": 1}
        rest = client.post("/router/queues/DOWN/cancel", json={"state": "dead"}, headers=operator)
        assert rest.json() == {"canceled": 1}
        assert client.get("/router/queues", headers=viewer).json() == []


def test_events_stay_uncommitted_until_their_entries_are_queued(
    start_pacs: StartPacs,
    destinations: dict[str, Destination],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stopped while the catalog cannot be written, the router leaves the event to be
    delivered again; restarted, it queues and sends it."""
    pacs = start(
        start_pacs, "rules:\n  - {name: all, forward: [{destination: WS1}]}\n", busy_timeout=0.2
    )
    register(pacs, "WS1", destinations["WS1"].port)
    [path] = ct_files(tmp_path / "ct", 1)
    with sqlite_write_lock(pacs.data_dir / "catalog.db"):
        assert store(pacs, path) == [0]
        wait_until(lambda: "queueing failed, retrying" in caplog.text, what="a failed write")
        pacs.stop_background()
        [left] = pacs.uncommitted(INSTANCE_STORED, "router")
        assert InstanceStored.from_bytes(left.value).sop_instance_uid in uids_of([path])
    assert pacs.loop_call(pacs.catalog.forward_queues()) == []
    pacs.start_background()
    wait_until(lambda: destinations["WS1"].count() == 1, what="sent after the restart")
    assert set(destinations["WS1"].received) == uids_of([path])
