"""Bad input gets a standard failure status, and the server keeps serving."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from tests.integration.peers import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    associate,
    associate_or_rejection,
    association_request,
    echo,
    pyfind,
    study_identifier,
)
from tests.integration.server import Server, micropacs

# pydicom warns when these tests build the malformed datasets they send on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Invalid value for VR UI", "ignore:The value length .* exceeds"
)


def ct_dataset(**overrides: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "BAD-1"
    ds.PatientName = "Bad^Input"
    ds.Modality = "CT"
    for key, value in overrides.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    return ds


def raw_file(path: Path, body: bytes, sop_instance: str | None = None) -> Path:
    """A Part 10 file whose dataset is exactly ``body``, sent without decoding."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_instance) if sop_instance else generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with path.open("wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)  # type: ignore[arg-type]
        fp.write(body)
    return path


def send_raw(server: Server, path: Path) -> int:
    before = _config.STORE_SEND_CHUNKED_DATASET  # process-wide: put back what was there
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = associate(server, [(CTImageStorage, [ExplicitVRLittleEndian])])
        try:
            return int(assoc.send_c_store(path).Status)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def encoded(ds: Dataset, path: Path) -> bytes:
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    return data[data.index(b"DICM") + 4 :]


def test_non_dicom_dataset_is_refused_with_c000(server: Server, tmp_path: Path) -> None:
    status = send_raw(
        server, raw_file(tmp_path / "junk.dcm", b"this is not a dataset at all\n" * 50)
    )
    assert status == 0xC000
    assert echo(server) == 0x0000


def test_truncated_dataset_is_refused_with_c000(server: Server, tmp_path: Path) -> None:
    ds = ct_dataset()
    ds.PixelData = b"\x00\x01" * 4096
    ds["PixelData"].VR = "OW"
    whole = tmp_path / "whole.dcm"
    ds.save_as(whole, enforce_file_format=True)
    data = whole.read_bytes()
    meta_end = len(data) - len(encoded(ds, tmp_path / "again.dcm"))
    body = data[meta_end:-1000]
    status = send_raw(server, raw_file(tmp_path / "cut.dcm", body, ds.SOPInstanceUID))
    assert status == 0xC000
    assert echo(server) == 0x0000


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"StudyInstanceUID": None}, 0xA900),
        ({"SeriesInstanceUID": "1.2.abc"}, 0xA900),
        ({"StudyInstanceUID": "1.2.3/../../etc"}, 0xA900),
        ({"SeriesInstanceUID": "1." + "2" * 70}, 0xA900),
    ],
)
def test_missing_or_invalid_uids_are_refused(
    server: Server, overrides: dict[str, object], status: int
) -> None:
    assoc = associate(server, [CTImageStorage])
    try:
        answer = assoc.send_c_store(ct_dataset(**overrides))
    finally:
        assoc.release()
    assert int(answer.Status) == status
    assert echo(server) == 0x0000


def test_malformed_pdu_is_aborted_and_server_keeps_serving(server: Server) -> None:
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
        sock.sendall(b"\x01\x00\x00\x00\x00\x10" + b"\xff" * 16)  # A-ASSOCIATE-RQ, garbage body
        reply = b""
        try:
            while chunk := sock.recv(1024):
                reply += chunk
        except OSError:
            pass
    assert reply == b"" or reply[0] in (0x03, 0x07)  # closed, A-ASSOCIATE-RJ or A-ABORT
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
        sock.sendall(b"\x42\x00garbage that is no PDU type at all")
    assert echo(server) == 0x0000


def test_bad_query_level_and_bad_uid_in_identifier(server: Server) -> None:
    bad_level = Dataset()
    bad_level.QueryRetrieveLevel = "EVERYTHING"
    bad_level.PatientID = ""
    _, status = pyfind(server, bad_level)
    assert status == 0xA900
    _, status = pyfind(server, study_identifier(StudyInstanceUID="1.2.x.3"))
    assert status == 0xA900


def test_move_to_unknown_destination_answers_a801(server: Server) -> None:
    assoc = associate(server, [StudyRootQueryRetrieveInformationModelMove])
    try:
        responses = list(
            assoc.send_c_move(
                study_identifier(StudyInstanceUID="1.2.3"),
                "NOBODY",
                StudyRootQueryRetrieveInformationModelMove,
            )
        )
    finally:
        assoc.release()
    assert int(responses[-1][0].Status) == 0xA801


def test_get_without_unique_key_is_refused(server: Server) -> None:
    assoc = associate(server, [StudyRootQueryRetrieveInformationModelGet])
    try:
        responses = list(
            assoc.send_c_get(
                study_identifier(PatientName="*"), StudyRootQueryRetrieveInformationModelGet
            )
        )
    finally:
        assoc.release()
    assert int(responses[-1][0].Status) == 0xA900


def test_strict_registry_rejects_unknown_callers_until_added(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    from tests.integration.server import start_server

    strict = start_server(
        tmp_path / "data", env={**server_env, "MICROPACS_DICOM__STRICT_NODES": "true"}
    )
    try:
        ae = AE(ae_title="STRANGER")
        ae.add_requested_context(CTImageStorage)
        _, rejected = associate_or_rejection(
            ae, strict.host, strict.dicom_port, ae_title=strict.ae_title
        )
        assert rejected is not None
        micropacs(
            "nodes",
            "add",
            "STRANGER",
            "127.0.0.1",
            "104",
            data_dir=strict.data_dir,
            env=strict.env,
        )
        time.sleep(1.2)  # the registry is re-read at most once a second
        assoc = ae.associate(strict.host, strict.dicom_port, ae_title=strict.ae_title)
        assert assoc.is_established
        assoc.release()
        assert '"msg": "association rejected", "calling_ae": "STRANGER"' in strict.log()
        metrics = httpx.get(f"{strict.http}/metrics").text
        counter = "micropacs_dimse_associations_total"
        assert f'{counter}{{peer="other",result="rejected"}} 1.0' in metrics
        assert f'{counter}{{peer="STRANGER",result="accepted"}} 1.0' in metrics
    finally:
        strict.stop()


def test_association_without_presentation_contexts_is_rejected(server: Server) -> None:
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
        sock.sendall(association_request(server.ae_title, contexts=()))
        reply = sock.recv(10)
    assert reply[:1] == b"\x03"  # A-ASSOCIATE-RJ
    assert reply[7:10] == b"\x01\x01\x01"  # rejected-permanent, service-user, no reason
    assert echo(server) == 0x0000


def test_study_root_has_no_patient_level(server: Server) -> None:
    patients = Dataset()
    patients.QueryRetrieveLevel = "PATIENT"
    patients.PatientID = ""
    _, status = pyfind(server, patients)
    assert status == 0xA900
    _, status = pyfind(server, patients, patient_root=True)
    assert status == 0x0000


def test_series_of_a_study_not_in_the_archive_is_success_without_matches(
    server: Server,
) -> None:
    stored = ct_dataset()
    assoc = associate(server, [CTImageStorage])
    try:
        assert int(assoc.send_c_store(stored).Status) == 0x0000
    finally:
        assoc.release()
    for patient_root in (False, True):
        series = Dataset()
        series.QueryRetrieveLevel = "SERIES"
        if patient_root:
            series.PatientID = stored.PatientID
        series.StudyInstanceUID = generate_uid()
        series.SeriesInstanceUID = ""
        matches, status = pyfind(server, series, patient_root=patient_root)
        assert (matches, status) == ([], 0x0000)


def test_refusals_log_no_values_of_the_dataset(server: Server) -> None:
    marker = "Secretname^Patientvalue"
    assoc = associate(server, [CTImageStorage])
    try:
        refused = assoc.send_c_store(ct_dataset(PatientName=marker, SeriesInstanceUID="1.2.abc"))
    finally:
        assoc.release()
    assert int(refused.Status) == 0xA900
    assert echo(server) == 0x0000
    log = server.log()
    assert "store refused" in log
    assert marker not in log and "1.2.abc" not in log


def test_unknown_pdu_type_is_answered_with_a_abort(server: Server) -> None:
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
        sock.sendall(b"\x42\x00\x00\x00\x00\x04abcd")
        reply = sock.recv(10)
    # A-ABORT, source service-provider, reason unrecognized-PDU (PS3.8 9.3.8)
    assert reply == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x01"
    assert echo(server) == 0x0000


def test_association_to_a_called_ae_title_not_ours_is_rejected(server: Server) -> None:
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
        sock.sendall(association_request("NOT-" + server.ae_title[:12]))
        reply = sock.recv(10)
    assert reply[:1] == b"\x03"  # A-ASSOCIATE-RJ
    assert reply[7:10] == b"\x01\x01\x07"  # permanent, service-user, called AE not recognized
    with socket.create_connection((server.host, server.dicom_port), timeout=10) as sock:
        sock.sendall(association_request(server.ae_title))
        assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC for our own title
    assert echo(server) == 0x0000
