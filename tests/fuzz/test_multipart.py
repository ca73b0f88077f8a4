"""Fuzzing the STOW-RS multipart/related splitter (RFC 2046 5.1, PS3.18 8.6.1.2).

:func:`~micropacs.dicomweb.multipart.split` returns the parts, saved to
files, or raises :class:`~micropacs.errors.InvalidInput` (``RequestTooLarge``
and ``RequestTimeout`` among them) and leaves no file behind. A well-formed
body, however it is chunked, gives back exactly the parts it was made of.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from micropacs.dicomweb import multipart
from micropacs.errors import InvalidInput
from tests.fuzz.conftest import fuzz
from tests.fuzz.mutation import mutated

LIMITS = multipart.Limits(max_bytes=64 * 1024, max_parts=8, timeout=30.0)
BOUNDARY_CHARACTERS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"


@dataclass(frozen=True)
class Body:
    """A body to split: its boundary, its bytes, how they arrive, and the parts it holds
    if it was built well-formed and left alone (None otherwise)."""

    boundary: str
    data: bytes
    chunks: tuple[int, ...]
    parts: tuple[bytes, ...] | None


def built(boundary: str, parts: list[bytes], preamble: bytes, epilogue: bytes) -> bytes:
    heads = [multipart.part_head(boundary, "application/dicom") for _ in parts]
    return (
        preamble
        + (multipart.CRLF if preamble else b"")
        + b"".join(head + part + multipart.CRLF for head, part in zip(heads, parts, strict=True))
        + multipart.closing(boundary)
        + epilogue
    )


@st.composite
def bodies(draw: st.DrawFn) -> Body:
    boundary = draw(st.text(st.sampled_from(BOUNDARY_CHARACTERS), min_size=1, max_size=70))
    delimiter = b"\r\n--" + boundary.encode()
    # Parts that hold pieces of the delimiter, CRLFs and dashes, as pixel data may.
    piece = st.sampled_from(
        (delimiter[:-1], delimiter[: len(delimiter) // 2], b"\r\n", b"--", b"\r\n\r\n", b"-")
    )
    part = st.lists(piece | st.binary(max_size=64), max_size=6).map(b"".join)
    parts = draw(st.lists(part, max_size=5))
    preamble = draw(st.sampled_from((b"", b"a preamble", b"--")))
    epilogue = draw(st.sampled_from((b"", b"\r\nan epilogue", delimiter)))
    data = built(boundary, parts, preamble, epilogue)
    expected: tuple[bytes, ...] | None = tuple(parts)
    kind = draw(st.sampled_from(("well-formed", "mutated", "random")))
    if kind == "mutated":
        data, expected = draw(mutated([data])), None
    elif kind == "random":
        data, expected = draw(st.binary(max_size=512)), None
    if expected is not None and (
        len(expected) > LIMITS.max_parts or any(delimiter in p for p in expected)
    ):
        expected = None  # over the limit, or the pieces made a delimiter: not those parts
    chunks = draw(st.lists(st.integers(0, 97) | st.integers(98, 70000), max_size=12))
    return Body(boundary, data, tuple(chunks), expected)


async def arriving(data: bytes, sizes: tuple[int, ...]) -> AsyncIterator[bytes]:
    at = 0
    for size in sizes:
        yield data[at : at + size]
        at += size
    if at < len(data):
        yield data[at:]


def test_split_returns_the_parts_or_raises_invalid_input(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    loop = asyncio.new_event_loop()

    def check(body: Body) -> None:
        try:
            found = loop.run_until_complete(
                multipart.split(arriving(body.data, body.chunks), body.boundary, folder, LIMITS)
            )
        except InvalidInput:
            assert list(folder.iterdir()) == [], "a refused body left files behind"
            return
        assert sorted(folder.iterdir()) == sorted(p.path for p in found)
        assert len(found) <= LIMITS.max_parts
        contents = tuple(p.path.read_bytes() for p in found)
        for p in found:
            p.path.unlink()
        if body.parts is not None:
            assert contents == body.parts
            assert all(p.content_type == "application/dicom" for p in found)

    try:
        fuzz("multipart split", bodies(), check, weight=2)
    finally:
        loop.close()
    assert list(folder.iterdir()) == []
