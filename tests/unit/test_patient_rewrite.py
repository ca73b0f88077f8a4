"""Objects leave with the patient's current attributes; the stored file stays as it is."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from micropacs.dicom import patient_rewrite
from tests.dicomdata import StudySpec, can_encode, ct_image, make_ct_series, write

NEW = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
    "00100020": {"vr": "LO", "Value": ["NEW-1"]},
    "00100021": {"vr": "LO", "Value": ["HOSP"]},
    "00100030": {"vr": "DA", "Value": ["19800202"]},
    "00100040": {"vr": "CS"},
}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_the_patient_module_is_rewritten_and_the_rest_copied(tmp_path: Path, syntax: str) -> None:
    if not can_encode(syntax):
        pytest.skip(f"no encoder for {syntax}")
    (stored,) = make_ct_series(tmp_path / "in", 1, 64, 64, transfer_syntax=syntax)
    before = _digest(stored)
    out = tmp_path / "out.dcm"

    assert patient_rewrite.rewrite(stored, NEW, out)

    assert _digest(stored) == before
    old, new = dcmread(stored), dcmread(out)
    assert str(new.PatientName) == "Doe^Jane"
    assert new.PatientID == "NEW-1"
    assert new.IssuerOfPatientID == "HOSP"
    assert new.PatientBirthDate == "19800202"
    assert new.PatientSex == ""
    assert new.file_meta.TransferSyntaxUID == syntax
    assert new.PixelData == old.PixelData
    assert new.StudyInstanceUID == old.StudyInstanceUID
    assert new.SOPInstanceUID == old.SOPInstanceUID
    assert out.stat().st_size - stored.stat().st_size < 64


def test_an_object_already_current_is_not_copied(tmp_path: Path) -> None:
    (stored,) = make_ct_series(tmp_path / "in", 1, 16, 16)
    out = tmp_path / "out.dcm"
    assert patient_rewrite.rewrite(stored, NEW, out)
    assert not patient_rewrite.rewrite(out, NEW, tmp_path / "again.dcm")
    assert not (tmp_path / "again.dcm").exists()


def test_a_name_in_the_objects_character_set_keeps_it(tmp_path: Path) -> None:
    study = StudySpec(patient_name="Muller^Jurgen", charset="ISO_IR 100")
    stored = write(ct_image(study, rows=16, cols=16), tmp_path / "a.dcm")
    out = tmp_path / "out.dcm"
    name = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]}}

    assert patient_rewrite.rewrite(stored, name, out)

    assert b"M\xfcller^J\xfcrgen" in out.read_bytes()
    assert str(dcmread(out).PatientName) == "Müller^Jürgen"
    assert dcmread(out).SpecificCharacterSet == "ISO_IR 100"


def test_a_name_the_objects_character_set_cannot_hold_turns_it_to_utf8(tmp_path: Path) -> None:
    study = StudySpec(
        patient_name="Muller^Jurgen", study_description="Thorax", charset="ISO_IR 100"
    )
    stored = write(ct_image(study, rows=16, cols=16), tmp_path / "a.dcm")
    out = tmp_path / "out.dcm"
    name = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Dvořák^Antonín"}]}}

    assert patient_rewrite.rewrite(stored, name, out)

    ds = dcmread(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Dvořák^Antonín"
    assert ds.StudyDescription == "Thorax"
