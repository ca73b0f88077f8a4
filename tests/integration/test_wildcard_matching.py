"""Wildcard QIDO-RS queries against a running micropacs: bounded work per request.

A pattern such as ``*a*a*…*b`` against a value of ``a`` made a backtracking
matcher take seconds (tripling with each two more characters) while the
server answered nothing else, ``/healthz`` included. ImageComments is matched
by the matcher itself (no catalog column pre-filters it), so these requests
reach it on either backend.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread

from micropacs.dicom.matching import MAX_PATTERN_LENGTH, MAX_STARS
from tests import dicomdata
from tests.integration.peers import find_stored, pyfind
from tests.integration.server import Server

STORED = "a" * 64
"""The stored ImageComments: a LO-length value, far past where backtracking blew up (28)."""
PATHOLOGICAL = ("*a" * (MAX_STARS - 1) + "*b", "*a" * 14 + "*b", "*" + "a?" * 100 + "*b")


@pytest.fixture(scope="module")
def stored(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The StudyInstanceUID of one instance whose ImageComments is ``STORED``, indexed."""
    ds = dcmread(dicomdata.make_study(tmp_path_factory.mktemp("wild"), 1, "CT")[0])
    ds.ImageComments = STORED
    DICOMwebClient(url=f"{server.http}/dicom-web").store_instances([ds])
    find_stored(server, "IMAGE", 1, StudyInstanceUID=ds.StudyInstanceUID)
    return str(ds.StudyInstanceUID)


def qido(client: httpx.Client, study: str, pattern: str) -> httpx.Response:
    return client.get(
        f"/dicom-web/studies/{study}/instances",
        params={"ImageComments": pattern},
        headers={"Accept": "application/dicom+json"},
    )


@pytest.mark.timeout(120)
def test_pathological_patterns_answer_at_once_and_healthz_stays_up(
    server: Server, stored: str
) -> None:
    with httpx.Client(base_url=server.http, timeout=10) as client:
        # the attribute is really matched: a pattern it fits finds the instance
        assert len(qido(client, stored, "*a*a*a*").json()) == 1
    answers: list[tuple[int, float]] = []

    def hammer() -> None:
        """Pathological queries, one after another, for a second and a half."""
        with httpx.Client(base_url=server.http, timeout=10) as client:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                for pattern in PATHOLOGICAL:
                    started = time.perf_counter()
                    status = qido(client, stored, pattern).status_code
                    answers.append((status, time.perf_counter() - started))

    querying = threading.Thread(target=hammer)
    querying.start()
    health: list[float] = []
    try:
        with httpx.Client(base_url=server.http, timeout=5) as probe:
            while querying.is_alive():
                started = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                health.append(time.perf_counter() - started)
                time.sleep(0.05)
    finally:
        querying.join(30)
    assert answers, "no QIDO-RS answer"
    assert {status for status, _ in answers} == {204}
    # Generous bounds for a shared machine: the backtracking matcher took minutes here.
    assert max(elapsed for _, elapsed in answers) < 5
    assert len(health) >= 5, f"only {len(health)} /healthz answers while the queries ran"
    assert max(health) < 3, f"/healthz took up to {max(health):.2f} s"


def test_patterns_beyond_the_caps_are_refused_saying_the_limit(server: Server, stored: str) -> None:
    with httpx.Client(base_url=server.http, timeout=30) as client:
        long = qido(client, stored, "a" * MAX_PATTERN_LENGTH + "*")
        assert long.status_code == 400
        assert f"at most {MAX_PATTERN_LENGTH} characters" in long.text
        stars = qido(client, stored, "*a" * (MAX_STARS + 1))
        assert stars.status_code == 400
        assert f"at most {MAX_STARS} '*'" in stars.text
        assert client.get("/healthz").status_code == 200


def image_find(study: str, pattern: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = ""
    ds.SOPInstanceUID = ""
    ds.ImageComments = pattern
    return ds


@pytest.mark.timeout(120)
def test_c_find_answers_at_once_and_refuses_beyond_the_caps(server: Server, stored: str) -> None:
    """The same matcher behind C-FIND: at once, and 0xA900 (Identifier does not match SOP
    Class, PS3.4 C.4.1.1.4) beyond the caps."""
    for pattern in PATHOLOGICAL:
        started = time.perf_counter()
        assert pyfind(server, image_find(stored, pattern)) == ([], 0x0000)
        assert time.perf_counter() - started < 5  # the backtracking matcher took minutes
    assert pyfind(server, image_find(stored, "*a" * (MAX_STARS + 1))) == ([], 0xA900)
