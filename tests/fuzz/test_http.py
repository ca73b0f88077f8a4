"""Fuzzing the DICOMweb routes (PS3.18 10.4-10.6, WADO-URI 9) through the HTTP app.

Beside schemathesis, which keeps to what the OpenAPI description allows
(``test_schemathesis.py``), this target goes where the description does not,
from a list of the routes: random paths built on them (real and random UIDs,
frame lists, tags, percent-encoded bytes), random query parameters (the ones
the routes read among them, non-ASCII included), random Accept,
Content-Type and Authorization headers and random STOW-RS bodies, sent
through the authentication gate to the qr and ingest services built over
embedded adapters. No answer may be a 5xx, and no request may raise out of
the app.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from starlette.applications import Starlette
from starlette.middleware import Middleware

from micropacs.auth.gate import Gate, authenticator
from micropacs.auth.local import LocalCredentials
from micropacs.auth.principal import Role
from micropacs.dicomweb.responses import ROOT
from micropacs.http import build_http_app
from tests.fuzz.conftest import fuzz
from tests.fuzz.mutation import mutated
from tests.service.conftest import Running
from tests.service.peers import STOW_BOUNDARY, ct_files, store


@dataclass
class Target:
    """The app under test, a client on the service loop, and what it holds."""

    pacs: Running
    client: httpx.AsyncClient
    token: str
    uids: tuple[str, str, str]
    stow_body: bytes


def gated_app(pacs: Running) -> Starlette:
    """The HTTP app as the runtime serves it: the services' routes behind the gate, with
    local tokens checked in the catalog."""
    settings = pacs.settings.model_copy(
        update={"auth": pacs.settings.auth.model_copy(update={"backend": "local"})}
    )
    routes = [route for app in pacs.apps for route in app.web_routes()]
    checks = {name: check for app in pacs.apps for name, check in app.checks.items()}
    access = Middleware(
        Gate, authenticate=authenticator(settings, pacs.catalog), metrics_open=True, basic=True
    )
    return build_http_app(pacs.registry, checks, routes, (), None, access)


@pytest.fixture(scope="module")
def target(fuzz_pacs: Running, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder: Path = tmp_path_factory.mktemp("http")
    files = ct_files(folder, 2, transfer_syntax=ExplicitVRLittleEndian)
    assert store(fuzz_pacs, *files) == [0x0000] * 2
    ds = dcmread(files[0], stop_before_pixels=True)
    fuzz_pacs.wait_indexed([ds.SOPInstanceUID])
    body = (
        b"--"
        + STOW_BOUNDARY.encode()
        + b"\r\nContent-Type: application/dicom\r\n\r\n"
        + files[1].read_bytes()[:2048]
        + b"\r\n--"
        + STOW_BOUNDARY.encode()
        + b"--\r\n"
    )

    async def open_client() -> tuple[httpx.AsyncClient, str]:
        token, _ = await LocalCredentials(fuzz_pacs.catalog).create_token(Role.OPERATOR)
        transport = httpx.ASGITransport(app=gated_app(fuzz_pacs))
        return httpx.AsyncClient(transport=transport, base_url="http://micropacs"), token

    client, token = fuzz_pacs.loop_call(open_client())
    uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    try:
        yield Target(fuzz_pacs, client, token, uids, body)
    finally:
        fuzz_pacs.loop_call(client.aclose())


def segment(real: str) -> st.SearchStrategy[str]:
    """A path segment: mostly the real value, else random text or bytes, percent-encoded."""
    return st.one_of(
        st.just(real),
        st.just(real),
        st.just(real),
        st.text(max_size=70),
        st.binary(max_size=24).map(lambda b: b.decode("latin-1")),
    ).map(lambda text: urllib.parse.quote(text.encode(), safe=""))


STUDY, SERIES, INSTANCE = "/studies/{study}", "/series/{series}", "/instances/{instance}"
ROUTES = (
    "/studies",
    "/series",
    "/instances",
    "/wado",
    STUDY,
    STUDY + "/series",
    STUDY + "/instances",
    STUDY + "/metadata",
    STUDY + "/thumbnail",
    STUDY + SERIES,
    STUDY + SERIES + "/instances",
    STUDY + SERIES + "/metadata",
    STUDY + SERIES + "/thumbnail",
    STUDY + SERIES + INSTANCE,
    STUDY + SERIES + INSTANCE + "/metadata",
    STUDY + SERIES + INSTANCE + "/thumbnail",
    STUDY + SERIES + INSTANCE + "/rendered",
    STUDY + SERIES + INSTANCE + "/frames/{frames}",
    STUDY + SERIES + INSTANCE + "/frames/{frames}/rendered",
    STUDY + SERIES + INSTANCE + "/bulkdata/{tag}",
)
"""The shapes of the qr and ingest routes (PS3.18 10.4-10.6), with their path parameters."""
FRAMES = st.one_of(
    st.lists(st.integers(-2, 2**40).map(str), min_size=1, max_size=300).map(",".join),
    st.text(st.sampled_from("0123456789,- "), max_size=40),
).map(lambda text: urllib.parse.quote(text, safe=","))
TAGS = st.one_of(
    st.sampled_from(("7FE00010", "00100010", "00282000", "7fe00010")), st.text(max_size=10)
).map(lambda text: urllib.parse.quote(text.encode(), safe=""))


@st.composite
def paths(draw: st.DrawFn, uids: tuple[str, str, str]) -> str:
    """A route of :data:`ROUTES` with its parameters filled, now and then a random path."""
    if draw(st.integers(0, 19)) == 0:
        return "/" + draw(st.text(max_size=30).map(lambda t: urllib.parse.quote(t.encode())))
    study, series, instance = uids
    return ROOT + draw(st.sampled_from(ROUTES)).format(
        study=draw(segment(study)),
        series=draw(segment(series)),
        instance=draw(segment(instance)),
        frames=draw(FRAMES),
        tag=draw(TAGS),
    )


QUERY_NAMES = st.one_of(
    st.sampled_from(
        (
            "PatientName",
            "PatientID",
            "StudyDate",
            "StudyInstanceUID",
            "00100010",
            "includefield",
            "limit",
            "offset",
            "fuzzymatching",
            "ModalitiesInStudy",
            "requestType",
            "studyUID",
            "seriesUID",
            "objectUID",
            "contentType",
            "transferSyntax",
            "frameNumber",
            "rows",
            "columns",
            "imageQuality",
            "window",
            "viewport",
            "quality",
            "annotation",
            "charset",
        )
    ),
    st.text(max_size=12),
)
QUERY_VALUES = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("0123456789,.-*?^ \\aZ"), max_size=30),
    st.sampled_from(("WADO", "application/dicom", "image/png", "image/jpeg", "all", "true", "")),
)
MEDIA = st.one_of(
    st.sampled_from(
        (
            "application/dicom+json",
            'multipart/related; type="application/dicom"',
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
            "image/png",
            "image/jpeg;q=0.5, */*;q=0.1",
            "*/*",
            "text/html",
            "",
        )
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60),
)


@st.composite
def requests(draw: st.DrawFn, target: Target) -> httpx.Request:
    method = draw(st.sampled_from(("GET", "GET", "GET", "GET", "HEAD", "POST", "OPTIONS", "PUT")))
    path = draw(paths(target.uids))
    params = draw(st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=5))
    query = urllib.parse.urlencode([(n.encode(), v.encode()) for n, v in params])
    if draw(st.integers(0, 7)) == 0:
        query = urllib.parse.quote_from_bytes(draw(st.binary(max_size=30)), safe="=&")
    headers: list[tuple[bytes, bytes]] = [(b"accept", draw(MEDIA).encode("latin-1"))]
    credential = draw(st.integers(0, 5))
    if credential:
        headers.append((b"authorization", b"Bearer " + target.token.encode()))
    else:
        headers.append(
            (
                b"authorization",
                draw(st.sampled_from((b"Basic ", b"Bearer ", b"basic", b"")))
                + draw(st.binary(max_size=40)).replace(b"\r", b"").replace(b"\n", b""),
            )
        )
    content = b""
    if method == "POST":
        if draw(st.integers(0, 9)):  # STOW-RS (PS3.18 10.5), else any route
            study = draw(segment(target.uids[0]))
            path = ROOT + draw(st.sampled_from(("/studies", "/studies/" + study)))
        boundary = draw(st.sampled_from((STOW_BOUNDARY, "", "x" * 71, '"' + STOW_BOUNDARY + '"')))
        content_type = draw(
            st.sampled_from(
                (
                    f'multipart/related; type="application/dicom"; boundary={boundary}',
                    f"multipart/related; boundary={boundary}",
                    "application/dicom",
                )
            )
            | MEDIA
        )
        headers.append((b"content-type", content_type.encode("latin-1")))
        content = draw(st.one_of(mutated([target.stow_body]), st.binary(max_size=256)))
    url = httpx.URL("http://micropacs" + path + ("?" + query if query else ""))
    return httpx.Request(method, url, headers=headers, content=content)


def test_dicomweb_routes_never_answer_5xx(target: Target) -> None:
    def check(request: httpx.Request) -> None:
        answer = target.pacs.loop_call(target.client.send(request))
        assert answer.status_code < 500, (answer.status_code, answer.text[:500])

    fuzz("dicomweb http", requests(target), check, weight=0.5)
    alive = target.pacs.loop_call(target.client.get("/healthz"))
    assert alive.status_code == 200
    assert target.pacs.leftovers() == []


def test_a_basic_credential_that_is_not_ascii_answers_401(target: Target) -> None:
    """Found by the target above: base64 of a non-ASCII header raised ValueError (a 500)."""
    request = httpx.Request(
        "GET", "http://micropacs" + ROOT + "/studies", headers=[(b"authorization", b"Basic \x80")]
    )
    answer = target.pacs.loop_call(target.client.send(request))
    assert answer.status_code == 401
