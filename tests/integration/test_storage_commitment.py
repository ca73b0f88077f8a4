"""Storage Commitment against a real ``micropacs serve`` (docs/storage-commitment.md).

A modality, a pynetdicom AE registered as a node with the port its own SCP listens
on, stores CT slices, changes the bytes of one stored object behind the archive's
back, and asks for commitment of what it stored plus an instance it never sent: the
N-EVENT-REPORT arrives on a second association, opened by micropacs to the node's
registered address, listing the intact instances as committed and the others with
their Failure Reasons. An unregistered caller and a node registered ``--no-store``
are refused; a malformed N-ACTION is answered with a failure status and the server
goes on answering.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from micropacs.adapters.factory import open_blob_store
from micropacs.config import S3Settings
from services.ingest.store_service import object_key
from tests import dicomdata
from tests.integration.peers import Verification, free_port
from tests.integration.server import Server, micropacs, start_server

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
MODALITY, NO_STORE = "MODALITY1", "VIEWONLY"
SUCCESS, NOT_AUTHORIZED, INVALID_ARGUMENT = 0x0000, 0x0124, 0x0115
PROCESSING_FAILURE, NO_SUCH_OBJECT = 0x0110, 0x0112
TIMEOUT = 30.0


@dataclass
class Requestor:
    """The modality: its SCP's port and the reports it received."""

    port: int
    reports: queue.Queue[tuple[int, str, Dataset]]


@pytest.fixture
def requestor() -> Iterator[Requestor]:
    reports: queue.Queue[tuple[int, str, Dataset]] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        calling = str(event.assoc.requestor.ae_title).strip()
        reports.put((int(event.event_type or 0), calling, event.event_information))
        return SUCCESS, None  # no Event Reply (PS3.4 J.3.3.2)

    ae = AE(ae_title=MODALITY)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_supported_context(STORAGE_COMMITMENT, scu_role=False, scp_role=True)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    assert isinstance(server, ThreadedAssociationServer)
    try:
        yield Requestor(port, reports)
    finally:
        ae.shutdown()


@pytest.fixture
def archive(tmp_path: Path, server_env: dict[str, str], requestor: Requestor) -> Iterator[Server]:
    """micropacs serve with the modality registered (before it starts: no registry delay)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    micropacs(
        "nodes", "add", MODALITY, "127.0.0.1", str(requestor.port),
        data_dir=data_dir, env=server_env,
    )  # fmt: skip
    micropacs(
        "nodes", "add", NO_STORE, "127.0.0.1", str(free_port()), "--no-store",
        data_dir=data_dir, env=server_env,
    )  # fmt: skip
    env = {
        **server_env,
        "MICROPACS_COMMITMENT__POLL_INTERVAL": "0.05",
        "MICROPACS_COMMITMENT__RETRY_INITIAL": "0.2",
    }
    server = start_server(data_dir, env=env)
    yield server
    server.stop()


def modality(server: Server, ae_title: str = MODALITY) -> AE:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(STORAGE_COMMITMENT)
    ae.add_requested_context(Verification)
    return ae


def store(server: Server, files: list[Path]) -> None:
    assoc = modality(server).associate(server.host, server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        assert [int(assoc.send_c_store(path).Status) for path in files] == [SUCCESS] * len(files)
    finally:
        assoc.release()


def commitment_request(references: Sequence[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def n_action(server: Server, information: Dataset, ae_title: str = MODALITY) -> int:
    """The N-ACTION's status; the same association then still answers a C-ECHO."""
    assoc = modality(server, ae_title).associate(
        server.host, server.dicom_port, ae_title=server.ae_title
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(information, 1, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
        assert int(assoc.send_c_echo().Status) == SUCCESS
        return int(status.Status)
    finally:
        assoc.release()


def corrupt(server: Server, ds: Dataset) -> None:
    """Change the last byte of the stored object: on disk in the file store, or rewritten
    through the S3 store on the stack."""
    key = object_key("default", ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    blob_url = server.env.get("MICROPACS_STORAGE__BLOB_URL")
    if blob_url is None:
        path = server.data_dir / "objects" / key
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        return

    async def rewrite() -> None:
        s3 = S3Settings(
            access_key=server.env["MICROPACS_S3__ACCESS_KEY"],
            secret_key=server.env["MICROPACS_S3__SECRET_KEY"],
        )
        blobs = await open_blob_store(blob_url, fsync=True, s3=s3)
        try:
            data = bytearray(b"".join([chunk async for chunk in blobs.read(key)]))
            data[-1] ^= 0xFF
            changed = server.data_dir.parent / "changed.dcm"
            changed.write_bytes(bytes(data))
            await blobs.put_file(key, changed)
        finally:
            await blobs.close()

    asyncio.run(rewrite())


def test_the_report_lists_stored_missing_and_corrupted_instances(
    archive: Server, requestor: Requestor, tmp_path: Path
) -> None:
    files = dicomdata.make_ct_series(tmp_path / "ct", 3)
    store(archive, files)
    good, kept, corrupted = (dcmread(path, stop_before_pixels=True) for path in files)
    corrupt(archive, corrupted)
    missing = generate_uid()
    information = commitment_request(
        [(CTImageStorage, ds.SOPInstanceUID) for ds in (good, kept, corrupted)]
        + [(CTImageStorage, missing)]
    )

    assert n_action(archive, information) == SUCCESS
    event_type, calling, report = requestor.reports.get(timeout=TIMEOUT)

    assert (event_type, calling) == (2, archive.ae_title)
    assert report.TransactionUID == information.TransactionUID
    committed = {str(item.ReferencedSOPInstanceUID) for item in report.ReferencedSOPSequence}
    assert committed == {good.SOPInstanceUID, kept.SOPInstanceUID}
    failed = {
        str(item.ReferencedSOPInstanceUID): int(item.FailureReason)
        for item in report.FailedSOPSequence
    }
    assert failed == {corrupted.SOPInstanceUID: PROCESSING_FAILURE, missing: NO_SUCH_OBJECT}


def test_only_registered_nodes_that_may_store_are_answered(
    archive: Server, requestor: Requestor, tmp_path: Path
) -> None:
    files = dicomdata.make_ct_series(tmp_path / "ct", 1)
    store(archive, files)
    (ds,) = (dcmread(path, stop_before_pixels=True) for path in files)
    information = commitment_request([(CTImageStorage, ds.SOPInstanceUID)])

    assert n_action(archive, information, ae_title="STRANGER") == NOT_AUTHORIZED
    assert n_action(archive, information, ae_title=NO_STORE) == NOT_AUTHORIZED
    assert n_action(archive, information) == SUCCESS
    event_type, _, report = requestor.reports.get(timeout=TIMEOUT)

    assert event_type == 1
    assert report.TransactionUID == information.TransactionUID  # the refused ones: no report
    assert requestor.reports.empty()


def test_a_malformed_request_gets_a_failure_status_and_the_server_goes_on(
    archive: Server, requestor: Requestor, tmp_path: Path
) -> None:
    files = dicomdata.make_ct_series(tmp_path / "ct", 1)
    store(archive, files)
    (ds,) = (dcmread(path, stop_before_pixels=True) for path in files)
    no_transaction = commitment_request([(CTImageStorage, ds.SOPInstanceUID)])
    del no_transaction.TransactionUID
    no_references = Dataset()
    no_references.TransactionUID = generate_uid()

    assert n_action(archive, no_transaction) == INVALID_ARGUMENT
    assert n_action(archive, no_references) == INVALID_ARGUMENT

    information = commitment_request([(CTImageStorage, ds.SOPInstanceUID)])
    assert n_action(archive, information) == SUCCESS
    event_type, _, report = requestor.reports.get(timeout=TIMEOUT)
    assert (event_type, report.TransactionUID) == (1, information.TransactionUID)
    assert archive.process.poll() is None
