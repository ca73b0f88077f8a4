"""WADO-RS bulk data, frames, rendered images and thumbnails of a 200 MiB object in bounded
memory: the server's peak RSS stays far below the object's size, and the bytes are right."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
from pydicom import dcmread

from micropacs.dicom.render import MAX_RENDER_PIXELS
from tests import dicomdata
from tests.integration.peers import find_stored, storescu
from tests.integration.server import Server

OCTETS = 'multipart/related; type="application/octet-stream"'
BOUND = 250 * 2**20
"""The peak RSS allowed while one 200 MiB object is retrieved (it was 938 MB for bulk data
and 2.8 GB to render a 200 MiB frame)."""


def peak_rss(server: Server) -> int:
    """The server's resident high-water mark (VmHWM) since the last :func:`reset_peak`."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def reset_peak(server: Server) -> None:
    """Start the high-water mark again from the current RSS (proc(5), clear_refs 5)."""
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")


def pixel_value_at(path: Path) -> int:
    """Where the (Explicit VR Little Endian, native) Pixel Data value starts in the file."""
    with path.open("rb") as fp:
        dcmread(fp, stop_before_pixels=True)
        return fp.tell() + 12


def parts(response: httpx.Response) -> list[bytes]:
    """The bodies of a multipart/related response."""
    boundary = response.headers["content-type"].split("boundary=")[1].encode()
    body = response.content
    assert body.endswith(b"--" + boundary + b"--\r\n")
    found = []
    for piece in body.split(b"--" + boundary)[1:-1]:
        _, _, content = piece.partition(b"\r\n\r\n")
        found.append(content.removesuffix(b"\r\n"))
    return found


def store(server: Server, path: Path) -> str:
    """Store ``path`` and return its WADO-RS instance URL once it is indexed."""
    ds = dcmread(path, stop_before_pixels=True)
    storescu(server, [path])
    find_stored(server, "IMAGE", 1, StudyInstanceUID=ds.StudyInstanceUID)
    return (
        f"{server.http}/dicom-web/studies/{ds.StudyInstanceUID}"
        f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )


def fetch(server: Server, url: str, accept: str) -> tuple[httpx.Response, int]:
    """GET ``url`` and the server's peak RSS while it answered."""
    reset_peak(server)
    response = httpx.get(url, headers={"Accept": accept}, timeout=300)
    return response, peak_rss(server)


def test_200_mib_multiframe_retrieved_in_bounded_memory(
    fresh_server: Server, tmp_path: Path
) -> None:
    big = dicomdata.make_large_multiframe(tmp_path / "big.dcm", 200 * 2**20)
    url = store(fresh_server, big)
    header = dcmread(big, stop_before_pixels=True)
    count, frame = int(header.NumberOfFrames), int(header.Rows) * int(header.Columns) * 2
    at = pixel_value_at(big)

    def frame_bytes(number: int) -> bytes:
        with big.open("rb") as fp:
            fp.seek(at + (number - 1) * frame)
            return fp.read(frame)

    bulk, peak = fetch(fresh_server, f"{url}/bulkdata/7FE00010", OCTETS)
    assert bulk.status_code == 200
    assert peak < BOUND, f"bulk data: {peak / 2**20:.0f} MiB"
    (whole,) = parts(bulk)
    with big.open("rb") as fp:
        fp.seek(at)
        expected = hashlib.sha256(fp.read(count * frame)).hexdigest()
    assert hashlib.sha256(whole).hexdigest() == expected
    del bulk, whole

    picked, peak = fetch(fresh_server, f"{url}/frames/{count},1,{count // 2}", OCTETS)
    assert picked.status_code == 200
    assert peak < BOUND, f"frames: {peak / 2**20:.0f} MiB"
    assert parts(picked) == [frame_bytes(count), frame_bytes(1), frame_bytes(count // 2)]

    repeated, peak = fetch(fresh_server, f"{url}/frames/" + ",".join(["7"] * 200), OCTETS)
    assert repeated.status_code == 200
    assert peak < BOUND, f"frames x200: {peak / 2**20:.0f} MiB"
    assert parts(repeated) == [frame_bytes(7)]

    for path in ("rendered", f"frames/{count}/rendered", "thumbnail"):
        image, peak = fetch(fresh_server, f"{url}/{path}", "image/jpeg")
        assert image.status_code == 200, image.text
        assert image.content[:2] == b"\xff\xd8"
        assert peak < BOUND, f"{path}: {peak / 2**20:.0f} MiB"

    missing, _ = fetch(fresh_server, f"{url}/frames/1,{count + 1}", OCTETS)
    assert missing.status_code == 404
    assert httpx.get(f"{fresh_server.http}/healthz").status_code == 200


def test_a_frame_too_large_to_render_is_refused_and_streamed(
    fresh_server: Server, tmp_path: Path
) -> None:
    side = 6144  # 37.7 M pixels, a 72 MiB frame: more than MAX_RENDER_PIXELS
    assert side * side > MAX_RENDER_PIXELS
    big = dicomdata.make_large_multiframe(tmp_path / "wide.dcm", 1, rows=side, cols=side)
    url = store(fresh_server, big)
    for path in ("rendered", "thumbnail"):
        refused, peak = fetch(fresh_server, f"{url}/{path}", "image/jpeg")
        assert refused.status_code == 400
        assert "pixels" in refused.text
        assert peak < BOUND
    frames, peak = fetch(fresh_server, f"{url}/frames/" + ",".join(["1"] * 200), OCTETS)
    assert frames.status_code == 200
    assert peak < BOUND, f"frames x200: {peak / 2**20:.0f} MiB"
    (only,) = parts(frames)
    at = pixel_value_at(big)
    with big.open("rb") as fp:
        fp.seek(at)
        assert only == fp.read(side * side * 2)
    assert httpx.get(f"{fresh_server.http}/healthz").status_code == 200
