"""The other side of the service suite: a pynetdicom SCU, a storage SCP and the objects sent.

Nothing here assembles a service (that is :mod:`tests.service.conftest`); these
are the real peers a PACS meets: a modality or workstation associating with
it, and a C-MOVE destination that accepts (or refuses) what it is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from micropacs.dicomweb.responses import ROOT
from tests import dicomdata

if TYPE_CHECKING:
    from tests.service.conftest import Running

SCU_AE = "SERVICESCU"
PENDING = (0xFF00, 0xFF01)
TIMEOUT = 10.0
"""Seconds any DIMSE exchange of this suite may take before the peer gives up."""

VERIFICATION = "1.2.840.10008.1.1"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root - GET
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root - MOVE


# --------------------------------------------------------------------------- objects


def ct_files(
    folder: Path,
    n: int,
    *,
    study: dicomdata.StudySpec | None = None,
    series: dicomdata.SeriesSpec | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """``n`` small CT slices of one series (64×64, so a store takes milliseconds)."""
    study = study or dicomdata.StudySpec()
    series = series or dicomdata.SeriesSpec()
    folder.mkdir(parents=True, exist_ok=True)
    return [
        dicomdata.write(
            dicomdata.ct_image(study, series, instance_number=number, rows=64, cols=64),
            folder / f"ct{number:03d}.dcm",
            transfer_syntax,
        )
        for number in range(1, n + 1)
    ]


def part10(path: Path, meta: FileMetaDataset, body: bytes) -> Path:
    """A Part 10 file with this file meta and exactly ``body`` as its dataset.

    pynetdicom sends such a file as it is: the request's Affected SOP Class
    and Instance UIDs come from the file meta, the dataset is not decoded.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(fp), meta, enforce_standard=True)
        fp.write(body)
    return path


def file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    """File meta of an Explicit VR Little Endian object."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def dataset_body(path: Path) -> bytes:
    """The encoded dataset of a Part 10 file, without preamble and file meta."""
    data = path.read_bytes()
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL, Explicit VR
    return data[144 + group_length :]


def study_identifier(level: str = "STUDY", **keys: Any) -> Dataset:
    """A Study Root identifier at ``level`` with these keys."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# ------------------------------------------------------------------------------- SCU


@contextmanager
def associate(
    pacs: Running,
    contexts: Iterable[str | tuple[str, Sequence[str]]],
    *,
    scp_roles: Sequence[str] = (),
    handlers: Sequence[Any] = (),
    ae_title: str = SCU_AE,
    timeout: float = TIMEOUT,
) -> Iterator[Association]:
    """An association with ``pacs``, released (or aborted) when the block ends;
    ``timeout`` bounds each wait for an answer."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for context in contexts:
        if isinstance(context, tuple):
            ae.add_requested_context(context[0], list(context[1]))
        else:
            ae.add_requested_context(context)
    assoc = ae.associate(
        pacs.host,
        pacs.port,
        ae_title=pacs.ae_title,
        ext_neg=[build_role(uid, scp_role=True) for uid in scp_roles],
        evt_handlers=list(handlers),
    )
    assert assoc.is_established, "micropacs did not accept the association"
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        if assoc.is_established:
            assoc.abort()
        assoc.join(timeout)


def echo(pacs: Running) -> int:
    """C-ECHO; the status."""
    with associate(pacs, [VERIFICATION]) as assoc:
        return int(assoc.send_c_echo().Status)


def store(pacs: Running, *objects: Path | Dataset, sop_class: str = CTImageStorage) -> list[int]:
    """C-STORE each object on one association; their statuses.

    Files go out as they are (pynetdicom's chunked send, which micropacs turns
    on for its own sub-operations too): the request's UIDs come from the file
    meta and the dataset is not decoded, so malformed objects arrive malformed.
    """
    _config.STORE_SEND_CHUNKED_DATASET = True
    with associate(pacs, [sop_class]) as assoc:
        return [int(assoc.send_c_store(item).Status) for item in objects]


def find(assoc: Association, identifier: Dataset) -> tuple[list[Dataset], int]:
    """C-FIND on an open association; the matches and the final status."""
    matches: list[Dataset] = []
    for status, found in assoc.send_c_find(identifier, FIND):
        assert status is not None and "Status" in status, "C-FIND timed out or aborted"
        if int(status.Status) in PENDING:
            assert found is not None, "a pending C-FIND response without its match"
            matches.append(found)
        else:
            return matches, int(status.Status)
    raise AssertionError("C-FIND ended without a final response")


def find_once(pacs: Running, identifier: Dataset) -> tuple[list[Dataset], int]:
    """C-FIND on an association of its own."""
    with associate(pacs, [FIND]) as assoc:
        return find(assoc, identifier)


def responses(generator: Iterator[tuple[Dataset, Dataset | None]]) -> list[Dataset]:
    """The status datasets of a C-GET/C-MOVE, each with its identifier as ``.identifier``."""
    answers: list[Dataset] = []
    for status, identifier in generator:
        assert status is not None and "Status" in status, "no answer: timed out or aborted"
        status.identifier = identifier
        answers.append(status)
    assert answers and int(answers[-1].Status) not in PENDING, "no final response"
    return answers


def failed_uids(final: Dataset) -> list[str]:
    """The Failed SOP Instance UID List of a final C-GET/C-MOVE response."""
    identifier = getattr(final, "identifier", None)
    if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
        return []
    value = identifier.FailedSOPInstanceUIDList
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


# -------------------------------------------------------------------------- STOW-RS

STOW_BOUNDARY = "micropacs-service-suite"


def stow(pacs: Running, files: Sequence[Path], study: str | None = None) -> httpx.Response:
    """STOW-RS (PS3.18 10.5) of ``files`` to ``/studies`` (or ``/studies/{study}``).

    The request goes through httpx's ASGI transport to the services' HTTP app,
    on the service loop, as uvicorn would hand it over.
    """
    boundary = STOW_BOUNDARY.encode()
    body = b"".join(
        b"--"
        + boundary
        + b"\r\nContent-Type: application/dicom\r\n\r\n"
        + path.read_bytes()
        + b"\r\n"
        for path in files
    )
    body += b"--" + boundary + b"--\r\n"
    url = f"{ROOT}/studies" + (f"/{study}" if study else "")
    content_type = f'multipart/related; type="application/dicom"; boundary={STOW_BOUNDARY}'

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=pacs.http_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://micropacs") as client:
            return await client.post(url, content=body, headers={"Content-Type": content_type})

    return pacs.loop_call(post())


# ------------------------------------------------------------------- storage SCP peer


def sop_instance_of(event: evt.Event) -> str:
    """The Affected SOP Instance UID of a received C-STORE request."""
    return str(cast(C_STORE, event.request).AffectedSOPInstanceUID)


@contextmanager
def storage_scp(
    on_store: Callable[[evt.Event], int], ae_title: str = "DESTINATION"
) -> Iterator[int]:
    """A pynetdicom storage SCP on a free port (yielded) that answers with ``on_store``."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.supported_contexts = StoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert isinstance(server, ThreadedAssociationServer)
    try:
        yield int(server.server_address[1])
    finally:
        associations = ae.active_associations
        ae.shutdown()
        for association in associations:
            association.join(TIMEOUT)
