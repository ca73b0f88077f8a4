"""Routing rules' coercions at ingest, in the in-process services: what a pynetdicom SCU
stores with C-STORE (and a client with STOW-RS) is changed before it is stored, and the
catalog, the event, the stored bytes and their recorded SHA-256 are all of the coerced object;
what no coercion matches is stored as it came."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, RLELossless

from micropacs.dicom.levels import Level
from micropacs.dicom.tags import SOP_INSTANCE_UID
from micropacs.events import INSTANCE_STORED, InstanceStored
from micropacs.ports import Node, Query
from micropacs.routing.rules import parse_rules
from services.ingest.importer import import_directory
from tests import dicomdata
from tests.service.conftest import HOST, Running, StartPacs
from tests.service.peers import SCU_AE, associate, ct_files, dataset_body, store, stow

RULES = """
rules:
  - name: issuer-of-the-mr-room
    match: {ae_group: mr-rooms}
    coerce:
      - {set: IssuerOfPatientID, value: HOSPITAL_A}
  - name: philips-fix
    match: {calling_ae: SERVICE*, attributes: {Manufacturer: Philips*}}
    coerce:
      - {copy: PatientID, to: OtherPatientIDs}
      - {copy: 2001100A, to: InstanceNumber}
      - {remove: InstitutionName}
  - name: web-clients
    match: {calling_ae: DICOMWEB}
    coerce:
      - {set: IssuerOfPatientID, value: WEB}
  - name: imported-archive
    match: {calling_ae: IMPORT}
    coerce:
      - {set: IssuerOfPatientID, value: OLD_ARCHIVE}
  - name: forward-only
    forward: [{destination: NOWHERE}]
"""
ISSUER, OTHER_IDS, INSTITUTION, INSTANCE_NUMBER = "00100021", "00101000", "00080080", "00200013"


def philips_mr(folder: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    """An MR image from a Philips scanner, its slice number in their private block."""
    ds = dicomdata.mr_image(rows=64, cols=64, instance_number=3)
    ds.Manufacturer = "Philips Medical Systems"
    ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x0A, "IS", "17")
    folder.mkdir(parents=True, exist_ok=True)
    return dicomdata.write(ds, folder / f"mr-{syntax}.dcm", syntax)


def start(start_pacs: StartPacs, group: str = "mr-rooms", *, index: bool = True) -> Running:
    pacs = start_pacs(rules=parse_rules(RULES), index=index)
    pacs.loop_call(pacs.catalog.put_node(Node(SCU_AE, HOST, 104, ae_group=group)))
    return pacs


def catalogued(pacs: Running, uid: str) -> dict[str, object]:
    """The catalog's image-level answer for one instance."""

    async def one() -> list[dict[str, object]]:
        identifier = {SOP_INSTANCE_UID: {"vr": "UI", "Value": [uid]}}
        return [row async for row in pacs.catalog.query(Query(Level.IMAGE, identifier))]

    rows = pacs.loop_call(one())
    assert len(rows) == 1
    return rows[0]


def stored(pacs: Running, uid: str) -> tuple[bytes, InstanceStored]:
    """The stored object's bytes, checked against the catalog's SHA-256, and its event."""
    (location,) = pacs.wait_indexed([uid])
    data = pacs.blobs.path_of(location.object_key).read_bytes()  # type: ignore[attr-defined]
    assert location.sha256 == hashlib.sha256(data).hexdigest()
    events = [
        event
        for record in pacs.published(INSTANCE_STORED)
        if (event := InstanceStored.from_bytes(record.value)).sop_instance_uid == uid
    ]
    assert len(events) == 1
    assert events[0].sha256 == location.sha256
    return data, events[0]


def test_a_c_store_is_coerced_before_it_is_stored(start_pacs: StartPacs, tmp_path: Path) -> None:
    pacs = start(start_pacs)
    for syntax in (ExplicitVRLittleEndian, RLELossless):
        path = philips_mr(tmp_path / "sent", str(syntax))
        sent = dcmread(path)
        uid = str(sent.SOPInstanceUID)
        with associate(pacs, [(MRImageStorage, [syntax])]) as assoc:
            # Stored, and the sender told it was changed (PS3.4 B.2.3).
            assert assoc.send_c_store(path).Status == 0xB000
        data, event = stored(pacs, uid)
        (tmp_path / "stored.dcm").write_bytes(data)
        kept = dcmread(tmp_path / "stored.dcm")
        assert kept.IssuerOfPatientID == "HOSPITAL_A"
        assert kept.OtherPatientIDs == sent.PatientID
        assert kept.InstanceNumber == 17
        assert "InstitutionName" not in kept
        assert kept.file_meta.TransferSyntaxUID == syntax
        assert kept.PixelData == sent.PixelData  # the received bytes, not decoded
        assert event.issuer_of_patient_id == "HOSPITAL_A"
        assert event.header[ISSUER] == {"vr": "LO", "Value": ["HOSPITAL_A"]}
        assert INSTITUTION not in event.header
        assert event.size == len(data)
        row = catalogued(pacs, uid)
        assert row[ISSUER] == {"vr": "LO", "Value": ["HOSPITAL_A"]}
        assert row[INSTANCE_NUMBER] == {"vr": "IS", "Value": [17]}
    assert pacs.metric("micropacs_ingest_coerced_instances_total") == 2
    assert pacs.leftovers() == []


def test_what_no_coercion_matches_is_stored_as_it_came(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start(start_pacs, group="ct-rooms")  # not the MR rooms, and a CT of no Philips
    (path,) = ct_files(tmp_path / "ct", 1)
    sent: Dataset = dcmread(path)
    assert store(pacs, path) == [0x0000]
    data, event = stored(pacs, str(sent.SOPInstanceUID))
    (tmp_path / "stored.dcm").write_bytes(data)
    assert dataset_body(tmp_path / "stored.dcm") == dataset_body(path)
    assert event.header[ISSUER] == {"vr": "LO", "Value": [sent.IssuerOfPatientID]}
    assert pacs.metric("micropacs_ingest_coerced_instances_total") == 0


def test_stow_rs_is_coerced_too(start_pacs: StartPacs, tmp_path: Path) -> None:
    pacs = start(start_pacs)
    (path,) = ct_files(tmp_path / "ct", 1)
    uid = str(dcmread(path).SOPInstanceUID)
    answer = stow(pacs, [path])
    assert answer.status_code == 202  # stored, with a warning (PS3.18 10.5.3)
    (item,) = answer.json()["00081199"]["Value"]
    assert item["00081196"] == {"vr": "US", "Value": [0xB000]}  # Coercion of Data Elements
    assert "00081198" not in answer.json() or not answer.json()["00081198"].get("Value")
    data, event = stored(pacs, uid)
    assert event.issuer_of_patient_id == "WEB"
    assert catalogued(pacs, uid)[ISSUER] == {"vr": "LO", "Value": ["WEB"]}
    assert OTHER_IDS not in event.header  # the Philips fix matched neither sender nor maker
    assert b"WEB" in data


def test_a_coerced_object_refused_by_the_event_log_leaves_no_file_behind(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start(start_pacs, index=False)
    path = philips_mr(tmp_path / "sent")
    pacs.loop_call(pacs.bus.close())  # the event log is down: nothing can be acknowledged
    with associate(pacs, [MRImageStorage]) as assoc:
        assert assoc.send_c_store(path).Status == 0xA700
    assert pacs.leftovers() == []  # neither the received file nor its coerced copy


def test_an_import_reads_the_rules_file_and_leaves_the_imported_files_as_they_were(
    start_pacs: StartPacs, tmp_path: Path
) -> None:
    pacs = start(start_pacs)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    router = pacs.settings.router.model_copy(update={"rules_file": rules})
    settings = pacs.settings.model_copy(update={"router": router})
    files = ct_files(tmp_path / "old", 2)
    before = {path: path.read_bytes() for path in files}
    summary = asyncio.run(import_directory(settings, tmp_path / "old"))
    assert (summary.stored, summary.failed) == (2, 0)
    for path, data in before.items():
        assert path.read_bytes() == data  # copied and coerced, never changed in place
        _, event = stored(pacs, str(dcmread(path).SOPInstanceUID))
        assert event.issuer_of_patient_id == "OLD_ARCHIVE"
