"""DICOMweb against a running micropacs: dicomweb-client (a client nobody here wrote) and raw
HTTP, crossing paths with DIMSE both ways (STOW-RS then C-FIND, C-STORE then WADO-RS)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from tests import dicomdata
from tests.integration.peers import find_every_stored, find_stored, findscu, storescu
from tests.integration.server import Server

STUDY_UID = "0020000D"
SOP_UID = "00080018"
FAILED = "00081198"
REFERENCED = "00081199"
FAILURE_REASON = "00081197"


def client(server: Server) -> DICOMwebClient:
    return DICOMwebClient(url=f"{server.http}/dicom-web")


def retrieve_as(server: Server, original: Dataset, syntax: str) -> Dataset:
    """WADO-RS of one instance, asking for ``syntax``."""
    return client(server).retrieve_instance(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        media_types=(("application/dicom", syntax),),
    )


def value(item: Mapping[str, Any], tag: str) -> Any:
    element = item.get(tag)
    assert isinstance(element, dict), f"{tag} missing from {item}"
    return element["Value"][0]


def multipart_body(
    parts: list[bytes], content_type: str = "application/dicom"
) -> tuple[str, bytes]:
    boundary = f"test-{uuid.uuid4().hex}"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
        for part in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body


@pytest.fixture(scope="module")
def mixed(server: Server, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The mixed set stored through C-STORE (storescu) and indexed."""
    files = dicomdata.make_mixed_set(tmp_path_factory.mktemp("mixed"))
    storescu(server, files)
    find_every_stored(server, files)
    return files


def test_stow_rs_then_c_find(server: Server, tmp_path: Path) -> None:
    files = dicomdata.make_study(tmp_path / "stow", 3, "MR")
    datasets = [dcmread(f) for f in files]

    answer = client(server).store_instances(datasets)

    stored = answer.ReferencedSOPSequence
    assert sorted(i.ReferencedSOPInstanceUID for i in stored) == sorted(
        d.SOPInstanceUID for d in datasets
    )
    assert "FailedSOPSequence" not in answer or not answer.FailedSOPSequence
    study = datasets[0].StudyInstanceUID
    find_stored(server, "IMAGE", 3, StudyInstanceUID=study)
    found = findscu(
        server,
        {
            "QueryRetrieveLevel": "STUDY",
            "StudyInstanceUID": study,
            "NumberOfStudyRelatedInstances": "",
        },
        tmp_path / "find",
    )
    assert [int(d.NumberOfStudyRelatedInstances) for d in found] == [3]


def test_c_store_then_wado_rs_gives_the_stored_objects(server: Server, mixed: list[Path]) -> None:
    originals = {dcmread(f).SOPInstanceUID: f for f in mixed}
    web = client(server)
    for study in {dcmread(f).StudyInstanceUID for f in mixed}:
        retrieved = web.retrieve_study(study, media_types=(("application/dicom", "*"),))
        for ds in retrieved:
            original = dcmread(originals[ds.SOPInstanceUID])
            assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            if "PixelData" in original:
                assert ds.PixelData == original.PixelData  # the stored bytes, as sent


def test_wado_rs_decompresses_when_the_stored_syntax_is_not_accepted(
    server: Server, mixed: list[Path]
) -> None:
    rle = next(f for f in mixed if dcmread(f).file_meta.TransferSyntaxUID == RLELossless)
    original = dcmread(rle)
    ds = retrieve_as(server, original, ExplicitVRLittleEndian)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    "target",
    [ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless],
)
@pytest.mark.parametrize("which", ["01_ct.dcm", "06_us.dcm"])
def test_every_lossless_codec_round_trips(
    server: Server, mixed: list[Path], target: str, which: str
) -> None:
    original = dcmread(next(f for f in mixed if f.name == which))
    ds = retrieve_as(server, original, target)
    assert ds.file_meta.TransferSyntaxUID == target
    assert np.array_equal(ds.pixel_array, original.pixel_array)


def _us(mixed: list[Path]) -> tuple[Path, object]:
    path = next(f for f in mixed if f.name == "06_us.dcm")
    return path, dcmread(path)


def test_frames_decoded_and_as_stored(server: Server, mixed: list[Path]) -> None:
    _, us = _us(mixed)
    web = client(server)
    uids = (us.StudyInstanceUID, us.SeriesInstanceUID, us.SOPInstanceUID)  # type: ignore[attr-defined]
    decoded = web.retrieve_instance_frames(
        *uids,
        frame_numbers=[1, 3],
        media_types=(("application/octet-stream", ExplicitVRLittleEndian),),
    )
    pixels = dcmread(_us(mixed)[0]).pixel_array
    assert decoded == [pixels[0].tobytes(), pixels[2].tobytes()]
    as_stored = web.retrieve_instance_frames(
        *uids, frame_numbers=[2], media_types=(("image/dicom-rle", RLELossless),)
    )
    frames = list(generate_frames(us.PixelData, number_of_frames=int(us.NumberOfFrames)))  # type: ignore[attr-defined]
    assert as_stored == [frames[1]]


def test_rendered_images_and_thumbnails(server: Server, mixed: list[Path]) -> None:
    ct = dcmread(mixed[0])
    instance = (
        f"{server.http}/dicom-web/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
        f"/instances/{ct.SOPInstanceUID}"
    )
    png = httpx.get(f"{instance}/rendered", headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (ct.Columns, ct.Rows)
    small = httpx.get(f"{instance}/rendered", params={"viewport": "64,64", "window": "40,400"})
    assert small.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(small.content)).size) == 64
    _, us = _us(mixed)
    thumb = httpx.get(
        f"{server.http}/dicom-web/studies/{us.StudyInstanceUID}/thumbnail"  # type: ignore[attr-defined]
    )
    assert thumb.status_code == 200
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 128
    assert httpx.get(f"{instance}/frames/9/rendered").status_code == 404
    assert httpx.get(f"{instance}/rendered", params={"window": "40"}).status_code == 400
    assert httpx.get(f"{instance}/rendered", headers={"Accept": "image/gif"}).status_code == 406
    assert httpx.get(f"{instance}/frames/0").status_code == 400


def test_wado_rs_refuses_a_syntax_it_cannot_produce(server: Server, mixed: list[Path]) -> None:
    ct = dcmread(mixed[0])
    answer = httpx.get(
        f"{server.http}/dicom-web/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}",
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.50"
        },
    )
    assert answer.status_code == 406
    assert "transfer-syntax=*" in answer.json()["error"]


def test_qido_rs_matches_like_c_find(server: Server, mixed: list[Path]) -> None:
    web = client(server)
    by_name = web.search_for_studies(search_filters={"PatientName": "Dvo*"})
    assert len(by_name) == 2  # his CT and MR studies
    by_id = web.search_for_studies(search_filters={"00100020": "PAT-DE-0002"})
    assert {value(s, "00100010")["Alphabetic"] for s in by_id} == {"Müller^Jürgen"}
    for study in by_name:
        url = value(study, "00081190")
        assert url == f"{server.http}/dicom-web/studies/{value(study, STUDY_UID)}"
        assert "00201208" in study  # NumberOfStudyRelatedInstances, a default key
    everything = web.search_for_studies()
    assert len(web.search_for_studies(limit=2)) == 2
    assert len(web.search_for_studies(offset=1)) == len(everything) - 1


def test_qido_rs_hierarchy_and_includefield(server: Server, mixed: list[Path]) -> None:
    web = client(server)
    ct = dcmread(mixed[0])
    series = web.search_for_series(ct.StudyInstanceUID)
    assert {value(s, "00080060") for s in series} == {"CT", "RTSTRUCT"}
    instances = web.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert [value(i, SOP_UID) for i in instances] == [ct.SOPInstanceUID]
    every = {value(i, SOP_UID) for i in web.search_for_instances(get_remaining=True)}
    assert every >= {dcmread(f).SOPInstanceUID for f in mixed}
    full = web.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID, fields=["all"])[0]
    assert value(full, "00180050") is not None  # SliceThickness, not a default key
    assert value(full, "00100010")["Alphabetic"] == "Dvořák^Antonín"


def test_metadata_comes_with_an_etag(server: Server, mixed: list[Path]) -> None:
    ct = dcmread(mixed[0])
    url = f"{server.http}/dicom-web/studies/{ct.StudyInstanceUID}/metadata"
    first = httpx.get(url)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/dicom+json")
    instances = first.json()
    assert {value(i, SOP_UID) for i in instances} == {
        dcmread(f).SOPInstanceUID
        for f in mixed
        if dcmread(f).StudyInstanceUID == ct.StudyInstanceUID
    }
    assert all("00100010" in i and "0020000E" in i for i in instances)
    (image,) = [i for i in instances if value(i, SOP_UID) == ct.SOPInstanceUID]
    bulk = client(server).retrieve_bulkdata(image["7FE00010"]["BulkDataURI"])
    assert b"".join(bulk) == ct.PixelData
    again = httpx.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304


def test_wado_uri_returns_the_stored_file(server: Server, mixed: list[Path]) -> None:
    ct = dcmread(mixed[0])
    answer = httpx.get(
        f"{server.http}/dicom-web/wado",
        params={
            "requestType": "WADO",
            "studyUID": ct.StudyInstanceUID,
            "seriesUID": ct.SeriesInstanceUID,
            "objectUID": ct.SOPInstanceUID,
            "contentType": "application/dicom",
        },
    )
    assert answer.status_code == 200
    assert dcmread(DicomBytesIO(answer.content)).PixelData == ct.PixelData
    jpeg = httpx.get(
        f"{server.http}/dicom-web/wado",
        params={
            "requestType": "WADO",
            "studyUID": ct.StudyInstanceUID,
            "seriesUID": ct.SeriesInstanceUID,
            "objectUID": ct.SOPInstanceUID,
            "rows": "100",
            "windowCenter": "40",
            "windowWidth": "400",
        },
    )
    assert jpeg.headers["content-type"] == "image/jpeg"  # WADO-URI's default for images
    assert max(Image.open(io.BytesIO(jpeg.content)).size) == 100


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/studies/not-a-uid/metadata", 400),
        ("/studies/1.2.3.999999/metadata", 404),
        ("/studies/1.2.3.999999", 404),
        ("/studies?limit=-1", 400),
        ("/studies?limit=ten", 400),
        ("/studies?NoSuchKeyword=1", 400),
        ("/wado?requestType=WADO&studyUID=1.2", 400),
        (
            "/wado?requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=1.4&contentType=image/gif",
            406,
        ),
    ],
)
def test_bad_requests_get_a_status_and_a_reason(server: Server, path: str, status: int) -> None:
    answer = httpx.get(f"{server.http}/dicom-web{path}")
    assert answer.status_code == status
    if status != 406:
        assert answer.json()["error"]
        assert answer.headers["warning"].startswith("299 ")


def test_qido_rs_fuzzymatching_is_ignored_with_a_warning(server: Server, mixed: list[Path]) -> None:
    answer = httpx.get(
        f"{server.http}/dicom-web/studies", params={"PatientName": "Dvo*", "fuzzymatching": "true"}
    )
    assert answer.status_code == 200
    assert "fuzzymatching" in answer.headers["warning"]
    # RetrieveURL is the server's public URL (by default its bound address and port).
    assert all(
        value(s, "00081190").startswith(f"{server.http}/dicom-web/studies/") for s in answer.json()
    )


def test_an_empty_search_answers_204(server: Server) -> None:
    answer = httpx.get(f"{server.http}/dicom-web/studies", params={"PatientID": "NOBODY-HERE"})
    assert answer.status_code == 204


def test_stow_rs_refuses_what_it_cannot_store(server: Server, tmp_path: Path) -> None:
    (good,) = dicomdata.make_study(tmp_path / "good", 1, "CT")
    other_study = "1.2.826.0.1.3680043.10.543.424242"
    stow = f"{server.http}/dicom-web/studies"

    not_multipart = httpx.post(
        stow, content=good.read_bytes(), headers={"content-type": "application/dicom"}
    )
    assert not_multipart.status_code == 415

    content_type, body = multipart_body([good.read_bytes()])
    truncated = httpx.post(stow, content=body[:-40], headers={"content-type": content_type})
    assert truncated.status_code == 400

    content_type, body = multipart_body([b"this is not DICOM at all" * 10])
    garbage = httpx.post(stow, content=body, headers={"content-type": content_type})
    assert garbage.status_code == 409
    (failed,) = garbage.json()[FAILED]["Value"]
    assert value(failed, FAILURE_REASON) in (0xC000, 0xA900)

    content_type, body = multipart_body([good.read_bytes()])
    elsewhere = httpx.post(
        f"{stow}/{other_study}", content=body, headers={"content-type": content_type}
    )
    assert elsewhere.status_code == 409
    (failed,) = elsewhere.json()[FAILED]["Value"]
    assert value(failed, FAILURE_REASON) == 0xC409

    content_type, body = multipart_body([good.read_bytes(), b"garbage" * 50])
    partly = httpx.post(stow, content=body, headers={"content-type": content_type})
    assert partly.status_code == 202
    assert len(partly.json()[REFERENCED]["Value"]) == 1
    assert len(partly.json()[FAILED]["Value"]) == 1
    assert httpx.get(f"{server.http}/healthz").status_code == 200


def test_cors_preflight_is_answered_for_configured_origins_only(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    from tests.integration.server import start_server

    viewer = start_server(
        tmp_path / "data",
        env={**server_env, "MICROPACS_HTTP__CORS_ORIGINS": '["https://viewer.example"]'},
    )
    try:
        for origin, allowed in (("https://viewer.example", True), ("https://evil.example", False)):
            answer = httpx.options(
                f"{viewer.http}/dicom-web/studies",
                headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
            )
            assert (answer.headers.get("access-control-allow-origin") == origin) is allowed
    finally:
        viewer.stop()


def test_compression_at_rest_is_lossless_and_recorded(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    from tests.integration.server import start_server

    files = dicomdata.make_study(tmp_path / "ct", 2, "CT")
    compressing = start_server(
        tmp_path / "data", env={**server_env, "MICROPACS_STORAGE__COMPRESSION": "jpeg-ls"}
    )
    try:
        storescu(compressing, files)
        find_stored(compressing, "IMAGE", 2)
        web = client(compressing)
        for path in files:
            original = dcmread(path)
            uids = (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
            stored = web.retrieve_instance(*uids, media_types=(("application/dicom", "*"),))
            assert stored.file_meta.TransferSyntaxUID == JPEGLSLossless
            assert len(stored.PixelData) < len(original.PixelData)
            served = web.retrieve_instance(
                *uids, media_types=(("application/dicom", ExplicitVRLittleEndian),)
            )
            assert np.array_equal(served.pixel_array, original.pixel_array)
    finally:
        compressing.stop()
    catalog = tmp_path / "data" / "catalog.db"
    if catalog.exists():  # the embedded catalog: the original syntax is on record
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(catalog)) as conn:
            recorded = {
                r[0] for r in conn.execute("SELECT original_transfer_syntax_uid FROM instances")
            }
        assert recorded == {ExplicitVRLittleEndian}


def test_c_get_compresses_for_a_receiver_that_takes_only_jpeg_ls(
    server: Server, mixed: list[Path]
) -> None:
    from tests.integration.peers import pyget

    original = dcmread(mixed[0])  # stored as Explicit VR Little Endian
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = original.StudyInstanceUID
    identifier.SeriesInstanceUID = original.SeriesInstanceUID
    identifier.SOPInstanceUID = original.SOPInstanceUID

    received, status = pyget(server, identifier, [original.SOPClassUID], [JPEGLSLossless])

    assert status == 0x0000
    (ds,) = received
    assert ds.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(ds.pixel_array, original.pixel_array)
