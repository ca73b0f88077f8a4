"""Per-node DICOM access control against a real ``micropacs serve``: who may associate,
from which address, and what each node may do (docs/security.md, "DICOM access control").

The peers are pynetdicom SCUs whose socket is bound to a chosen loopback source
address (127.0.0.1 or 127.0.0.2, both local on Linux) and DCMTK's echoscu.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset
from pynetdicom import AE, build_role, evt

from tests import dicomdata
from tests.integration.peers import (
    Rejection,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
    associate_or_rejection,
    dcmtk,
    free_port,
    study_identifier,
)
from tests.integration.server import Server, micropacs, start_server

CT = "1.2.840.10008.5.1.4.1.1.2"
NOT_AUTHORIZED, MOVE_DESTINATION_UNKNOWN = 0x0124, 0xA801
CALLING_AE_NOT_RECOGNIZED = 0x03
HERE, ELSEWHERE = "127.0.0.1", "127.0.0.2"

NODES: dict[str, tuple[str, ...]] = {
    "FULL": (HERE,),
    "AT_TWO": (ELSEWHERE,),
    "BY_NETWORK": ("192.0.2.1", "--allow-from", "127.0.0.0/30"),
    "ONLY_NETWORK": (HERE, "--allow-from", "127.0.0.2/32", "--not-from-host"),
    "NO_STORE": (HERE, "--no-store"),
    "NO_QUERY": (HERE, "--no-query"),
    "NO_RETRIEVE": (HERE, "--no-retrieve"),
    "NOT_A_DEST": (HERE, "--no-move-destination"),
}
"""Registered nodes: AE title -> host and `micropacs nodes add` options."""


def register(server: Server) -> None:
    for title, (host, *options) in NODES.items():
        micropacs(
            "nodes", "add", title, host, str(free_port()), *options,
            data_dir=server.data_dir, env=server.env,
        )  # fmt: skip
    time.sleep(1.2)  # the registry is re-read at most once a second


def start(tmp_path: Path, env: dict[str, str], *, strict: bool) -> Server:
    flag = {"MICROPACS_DICOM__STRICT_NODES": "true" if strict else "false"}
    server = start_server(tmp_path / "data", env={**env, **flag})
    register(server)
    return server


def answer(
    server: Server, calling: str, contexts: list[str], source: str = HERE, **kwargs: Any
) -> tuple[Any, Rejection | None]:
    """The association requested, and the A-ASSOCIATE-RJ it received."""
    ae = AE(ae_title=calling)
    for context in contexts:
        ae.add_requested_context(context)
    return associate_or_rejection(
        ae,
        server.host,
        server.dicom_port,
        ae_title=server.ae_title,
        bind_address=(source, 0),
        **kwargs,
    )


def associate(
    server: Server, calling: str, contexts: list[str], source: str = HERE, **kwargs: Any
) -> Any:
    return answer(server, calling, contexts, source, **kwargs)[0]


def rejection(server: Server, calling: str, source: str = HERE) -> int | None:
    """The diagnostic of the A-ASSOCIATE-RJ answered to ``calling`` from ``source``
    (rejected-permanent, service-user), or None when the association was accepted."""
    assoc, rejected = answer(server, calling, [Verification], source)
    if assoc.is_established:
        assoc.release()
        return None
    assert rejected is not None, "neither accepted nor rejected"
    assert rejected[:2] == (0x01, 0x01)
    return rejected[2]


def store(server: Server, calling: str, ds: Dataset) -> int:
    assoc = associate(server, calling, [CT])
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def find(server: Server, calling: str, identifier: Dataset) -> tuple[int, int]:
    """(matches, final status) of a Study Root C-FIND."""
    model = StudyRootQueryRetrieveInformationModelFind
    assoc = associate(server, calling, [model])
    assert assoc.is_established
    matches, final = 0, -1
    try:
        for status, _ in assoc.send_c_find(identifier, model):
            if int(status.Status) in (0xFF00, 0xFF01):
                matches += 1
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return matches, final


def get(server: Server, calling: str, identifier: Dataset) -> tuple[int, int]:
    """(instances received, final status) of a Study Root C-GET."""
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0x0000

    model = StudyRootQueryRetrieveInformationModelGet
    assoc = associate(
        server,
        calling,
        [model, CT],
        ext_neg=[build_role(CT, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    final = -1
    try:
        for status, _ in assoc.send_c_get(identifier, model):
            if int(status.Status) not in (0xFF00, 0xFF01):
                final = int(status.Status)
    finally:
        assoc.release()
    return len(received), final


def move(server: Server, calling: str, identifier: Dataset, destination: str) -> int:
    """The final status of a Study Root C-MOVE."""
    model = StudyRootQueryRetrieveInformationModelMove
    assoc = associate(server, calling, [model])
    assert assoc.is_established
    final = -1
    try:
        for status, _ in assoc.send_c_move(identifier, destination, model):
            if int(status.Status) not in (0xFF00, 0xFF01):
                final = int(status.Status)
    finally:
        assoc.release()
    return final


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory, shared_stack: Any
) -> Iterator[tuple[Server, Dataset]]:
    """A strict server with the nodes of NODES and one stored CT study."""
    from tests.integration.conftest import isolated_env

    server = start(tmp_path_factory.mktemp("strict"), isolated_env(shared_stack), strict=True)
    try:
        ds = dicomdata.ct_image(rows=64, cols=64)
        assert store(server, "FULL", ds) == 0x0000
        identifier = study_identifier(StudyInstanceUID=ds.StudyInstanceUID)
        deadline = time.monotonic() + 30
        while find(server, "FULL", identifier)[0] == 0:
            assert time.monotonic() < deadline, "the stored study was never indexed"
            time.sleep(0.2)
        yield server, identifier
        assert rejection(server, "FULL") is None  # still serving after every refusal
    finally:
        server.stop()


def test_strict_rejects_an_unregistered_calling_ae_title(strict: tuple[Server, Dataset]) -> None:
    server, _ = strict
    assert rejection(server, "ANYONE") == CALLING_AE_NOT_RECOGNIZED
    # What the finding did: a C-GET calling itself ANYONE received the instances.
    model = StudyRootQueryRetrieveInformationModelGet
    _, rejected = answer(server, "ANYONE", [model, CT], ext_neg=[build_role(CT, scp_role=True)])
    assert rejected is not None
    echo = dcmtk("echoscu", "-aet", "ANYONE", "-aec", server.ae_title, server.host,
                 str(server.dicom_port), check=False)  # fmt: skip
    assert echo.returncode != 0
    assert "Calling AE Title Not Recognized" in echo.stdout + echo.stderr


def test_a_registered_title_is_accepted_only_from_its_addresses(
    strict: tuple[Server, Dataset],
) -> None:
    server, _ = strict
    assert rejection(server, "FULL", HERE) is None
    assert rejection(server, "FULL", ELSEWHERE) == CALLING_AE_NOT_RECOGNIZED
    assert rejection(server, "AT_TWO", HERE) == CALLING_AE_NOT_RECOGNIZED
    assert rejection(server, "AT_TWO", ELSEWHERE) is None
    assert rejection(server, "BY_NETWORK", HERE) is None  # in 127.0.0.0/30, not its host
    assert rejection(server, "ONLY_NETWORK", HERE) == CALLING_AE_NOT_RECOGNIZED
    assert rejection(server, "ONLY_NETWORK", ELSEWHERE) is None

    log = server.log()
    assert '"msg": "association rejected: a registered calling AE title from another' in log
    metrics = httpx.get(f"{server.http}/metrics").text
    counter = "micropacs_dimse_associations_total"
    assert f'{counter}{{peer="AT_TWO",result="rejected"}} 1.0' in metrics
    assert f'{counter}{{peer="AT_TWO",result="accepted"}} 1.0' in metrics


def test_each_operation_needs_its_permission(strict: tuple[Server, Dataset]) -> None:
    server, identifier = strict
    assert store(server, "NO_STORE", dicomdata.ct_image(rows=64, cols=64)) == NOT_AUTHORIZED
    assert find(server, "NO_STORE", identifier) == (1, 0x0000)

    assert find(server, "NO_QUERY", identifier) == (0, NOT_AUTHORIZED)
    assert get(server, "NO_QUERY", identifier) == (1, 0x0000)

    assert get(server, "NO_RETRIEVE", identifier) == (0, NOT_AUTHORIZED)
    assert move(server, "NO_RETRIEVE", identifier, "FULL") == NOT_AUTHORIZED
    assert find(server, "NO_RETRIEVE", identifier) == (1, 0x0000)
    assert get(server, "FULL", identifier) == (1, 0x0000)

    log = server.log()
    assert '"operation": "C-STORE", "calling_ae": "NO_STORE"' in log
    assert '"operation": "C-GET", "calling_ae": "NO_RETRIEVE"' in log


def test_a_move_to_a_node_that_may_not_be_a_destination_is_refused(
    strict: tuple[Server, Dataset],
) -> None:
    server, identifier = strict
    assert move(server, "FULL", identifier, "NOT_A_DEST") == MOVE_DESTINATION_UNKNOWN
    assert move(server, "FULL", identifier, "UNKNOWN") == MOVE_DESTINATION_UNKNOWN


def test_without_strict_nodes_registered_nodes_keep_their_restrictions(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    server = start(tmp_path, server_env, strict=False)
    try:
        ds = dicomdata.ct_image(rows=64, cols=64)
        assert store(server, "ANYONE", ds) == 0x0000  # unknown callers, as before
        assert store(server, "NO_STORE", dicomdata.ct_image(rows=64, cols=64)) == NOT_AUTHORIZED
        assert rejection(server, "AT_TWO", HERE) == CALLING_AE_NOT_RECOGNIZED
        assert rejection(server, "ANYONE", ELSEWHERE) is None
        metrics = httpx.get(f"{server.http}/metrics").text
        assert 'micropacs_dimse_associations_total{peer="other",result="accepted"}' in metrics
        assert 'peer="ANYONE"' not in metrics
    finally:
        server.stop()


def test_nodes_list_shows_what_each_node_may_do(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for title, (host, *options) in NODES.items():
        micropacs("nodes", "add", title, host, "104", *options, data_dir=data_dir)
    listing = micropacs("nodes", "list", data_dir=data_dir).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()[1:]}
    assert rows["FULL"][3:5] == ["store,query,retrieve,move-dest", "host"]
    assert rows["NO_STORE"][3] == "query,retrieve,move-dest"
    assert rows["BY_NETWORK"][4] == "host,127.0.0.0/30"
    assert rows["ONLY_NETWORK"][4] == "127.0.0.2/32"
    refused = micropacs(
        "nodes", "add", "BAD", HERE, "104", "--allow-from", "10.0.0.0/33",
        data_dir=data_dir, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "allowed_from of BAD" in refused.stderr
