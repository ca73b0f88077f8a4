"""The work of one query is bounded: a query on an attribute without an index stops
after ``MICROPACS_QUERY__MAX_EXAMINED`` records thrown away and is refused, through
QIDO-RS (413) and C-FIND (0xA700 Refused: Out of Resources, PS3.4 C.4.1.1.4) alike,
while the same key narrowed by a study answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread

from stack import servers
from tests import dicomdata
from tests.integration.conftest import isolated_env
from tests.integration.peers import find_stored, pyfind
from tests.integration.server import Server, start_server

BOUND = 3


@pytest.fixture(scope="module")
def bounded(
    tmp_path_factory: pytest.TempPathFactory, shared_stack: servers.Stack | None
) -> Iterator[Server]:
    env = {**isolated_env(shared_stack), "MICROPACS_QUERY__MAX_EXAMINED": str(BOUND)}
    running = start_server(tmp_path_factory.mktemp("bound") / "data", env=env)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def needle_study(bounded: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Six plain instances in one study and one "needle" in another; the needle's study."""
    files: list[Path] = dicomdata.make_study(tmp_path_factory.mktemp("plain"), 6, "CT")
    plain = [dcmread(f) for f in files]
    needle = dcmread(dicomdata.make_study(tmp_path_factory.mktemp("needle"), 1, "CT")[0])
    for ds in plain:
        ds.ImageComments = "plain"
    needle.ImageComments = "needle"
    DICOMwebClient(url=f"{bounded.http}/dicom-web").store_instances([*plain, needle])
    find_stored(bounded, "IMAGE", 1, StudyInstanceUID=needle.StudyInstanceUID)
    find_stored(bounded, "IMAGE", 6, StudyInstanceUID=plain[0].StudyInstanceUID)
    return str(needle.StudyInstanceUID)


def qido(server: Server, path: str) -> httpx.Response:
    return httpx.get(
        f"{server.http}/dicom-web{path}",
        params={"ImageComments": "*needle*"},
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )


def test_qido_rs_refuses_a_query_over_the_bound_and_answers_a_narrow_one(
    bounded: Server, needle_study: str
) -> None:
    broad = qido(bounded, "/instances")
    assert broad.status_code == 413
    assert f"more than {BOUND} records" in broad.text
    assert "needle" not in broad.headers.get("Warning", "")
    narrow = qido(bounded, f"/studies/{needle_study}/instances")
    assert narrow.status_code == 200
    assert len(narrow.json()) == 1
    assert httpx.get(f"{bounded.http}/healthz", timeout=5).status_code == 200


def test_c_find_answers_out_of_resources_over_the_bound(bounded: Server, needle_study: str) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = ""
    ds.SOPInstanceUID = ""
    ds.ImageComments = "*needle*"
    assert pyfind(bounded, ds) == ([], 0xA700)
    ds.StudyInstanceUID = needle_study
    found, status = pyfind(bounded, ds)
    assert (len(found), status) == (1, 0x0000)
