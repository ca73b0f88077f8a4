"""multipart/related bodies and QIDO-RS parameters (micropacs.dicomweb)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from micropacs.dicom.levels import Level
from micropacs.dicomweb import multipart, qido
from micropacs.errors import InvalidInput, RequestTimeout, RequestTooLarge


def body_of(parts: list[bytes], boundary: str) -> bytes:
    return b"".join(
        multipart.part_head(boundary, "application/dicom") + part + multipart.CRLF for part in parts
    ) + multipart.closing(boundary)


async def chunked(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        yield data[at : at + size]
        at += size
    yield data[at:]


@pytest.mark.parametrize("chunk", [1, 3, 17, 4096, 1 << 20])
def test_split_finds_every_part_whatever_the_chunking(tmp_path: Path, chunk: int) -> None:
    rng = random.Random(chunk)
    boundary = multipart.new_boundary()
    # Parts holding CRLFs, dashes and most of the delimiter, as pixel data may.
    parts = [
        bytes(rng.randrange(256) for _ in range(5000)),
        b"\r\n--" + boundary.encode()[:-1] + b"x\r\n",
        b"",
        b"--\r\n\r\n",
    ]
    data = body_of(parts, boundary)
    sizes = [chunk] * (len(data) // chunk + 1)

    found = asyncio.run(multipart.split(chunked(data, sizes), boundary, tmp_path))

    assert [p.path.read_bytes() for p in found] == parts
    assert all(p.content_type == "application/dicom" for p in found)


def test_split_refuses_a_body_without_its_close_delimiter(tmp_path: Path) -> None:
    boundary = multipart.new_boundary()
    data = body_of([b"abc" * 1000], boundary)[:-10]

    with pytest.raises(InvalidInput, match="close delimiter"):
        asyncio.run(multipart.split(chunked(data, [100] * 40), boundary, tmp_path))

    assert list(tmp_path.iterdir()) == []  # nothing left behind


async def repeated(block: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield block


def test_split_is_linear_in_a_body_without_any_delimiter(tmp_path: Path) -> None:
    # Each chunk used to be searched together with everything before it: 32 MiB took ~10 s.
    # CPU time, not the clock: other work on the machine cannot make the test fail.
    started = time.process_time()
    with pytest.raises(InvalidInput, match="close delimiter"):
        asyncio.run(multipart.split(repeated(b"x" * 65536, 512), "b", tmp_path))
    assert time.process_time() - started < 2.0
    assert list(tmp_path.iterdir()) == []


def test_split_is_linear_in_many_small_parts_in_one_chunk(tmp_path: Path) -> None:
    boundary = multipart.new_boundary()
    data = body_of([b"p"] * 5000, boundary)
    # CPU time: creating the 5,000 part files waits for a busy disk by the clock (~1 s of
    # CPU, up to 20 s of wall time seen), and a quadratic search would cost minutes of CPU.
    started = time.process_time()
    found = asyncio.run(multipart.split(repeated(data, 1), boundary, tmp_path))
    assert time.process_time() - started < 5.0
    assert len(found) == 5000


def test_a_part_without_headers_is_read(tmp_path: Path) -> None:
    data = b"--b\r\n\r\nfirst\r\n--b\r\nContent-Type: x/y\r\n\r\nsecond\r\n--b--\r\n"
    found = asyncio.run(multipart.split(chunked(data, [1] * len(data)), "b", tmp_path))
    assert [(p.content_type, p.path.read_bytes()) for p in found] == [
        ("", b"first"),
        ("x/y", b"second"),
    ]


def test_split_refuses_more_parts_than_allowed(tmp_path: Path) -> None:
    boundary = multipart.new_boundary()
    data = body_of([b"abc"] * 4, boundary)
    limits = multipart.Limits(max_parts=3)

    with pytest.raises(RequestTooLarge, match="more than 3 parts"):
        asyncio.run(multipart.split(chunked(data, [7] * 40), boundary, tmp_path, limits))

    assert list(tmp_path.iterdir()) == []


def test_split_refuses_a_body_larger_than_allowed(tmp_path: Path) -> None:
    boundary = multipart.new_boundary()
    data = body_of([b"abc" * 1000, b"def" * 1000], boundary)
    limits = multipart.Limits(max_bytes=4000)

    with pytest.raises(RequestTooLarge, match="larger than 4000 bytes"):
        asyncio.run(multipart.split(chunked(data, [1000] * 10), boundary, tmp_path, limits))

    assert list(tmp_path.iterdir()) == []


def test_split_gives_up_on_a_body_that_arrives_too_slowly(tmp_path: Path) -> None:
    boundary = multipart.new_boundary()
    data = body_of([b"abc" * 1000], boundary)

    async def slowly() -> AsyncIterator[bytes]:
        yield data[:2000]  # a part's file is open now
        await asyncio.sleep(30)
        yield data[2000:]

    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        asyncio.run(multipart.split(slowly(), boundary, tmp_path, multipart.Limits(timeout=0.3)))
    assert time.monotonic() - started < 5.0
    assert list(tmp_path.iterdir()) == []


def test_join_is_what_split_reads(tmp_path: Path) -> None:
    boundary = multipart.new_boundary()

    async def parts() -> AsyncIterator[tuple[str, str | None, AsyncIterator[bytes]]]:
        for payload in (b"first", b"second" * 100):
            yield "application/dicom", None, chunked(payload, [3, 3])

    async def roundtrip() -> list[bytes]:
        found = await multipart.split(multipart.join(boundary, parts()), boundary, tmp_path)
        return [p.path.read_bytes() for p in found]

    assert asyncio.run(roundtrip()) == [b"first", b"second" * 100]


def test_parameters_of_a_content_type() -> None:
    media, params = multipart.parameters(
        'multipart/related; type="application/dicom"; boundary=abc; transfer-syntax=*'
    )
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "abc", "transfer-syntax": "*"}


def test_qido_parameters_become_a_c_find_identifier() -> None:
    query = qido.parse(
        Level.SERIES,
        [
            ("Modality", "CT"),
            ("00080021", "20240101-"),
            ("includefield", "BodyPartExamined,00200011"),
            ("limit", "10"),
            ("offset", "5"),
        ],
        {"StudyInstanceUID": "1.2.3"},
    )
    keys = query.identifier
    assert keys["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert keys["00080021"] == {"vr": "DA", "Value": ["20240101-"]}
    assert keys["00180015"] == {"vr": "CS"}  # an include field is a return key
    assert keys["0020000D"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert keys["00080052"] == {"vr": "CS", "Value": ["SERIES"]}
    assert "0008103E" in keys  # SeriesDescription, a default key
    assert (query.limit, query.offset, query.include_all, query.warnings) == (10, 5, False, [])


def test_qido_person_names_and_uid_lists() -> None:
    keys = qido.parse(
        Level.STUDY, [("PatientName", "Dvo*"), ("StudyInstanceUID", "1.2.3,1.2.4")]
    ).identifier
    assert keys["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Dvo*"}]}
    assert keys["0020000D"] == {"vr": "UI", "Value": ["1.2.3", "1.2.4"]}


@pytest.mark.parametrize(
    "params",
    [
        [("limit", "-1")],
        [("offset", "x")],
        [("NotAKeyword", "1")],
        [("ReferencedStudySequence.ReferencedSOPInstanceUID", "1.2")],
        [("ReferencedStudySequence", "1.2")],
    ],
)
def test_qido_refuses_what_it_cannot_answer(params: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidInput):
        qido.parse(Level.STUDY, params)


def test_fuzzymatching_is_ignored_with_a_warning() -> None:
    query = qido.parse(Level.STUDY, [("fuzzymatching", "true"), ("includefield", "all")])
    assert query.include_all
    assert query.warnings == [qido.FUZZY_IGNORED]
