"""The DICOM JSON model (PS3.18 F.2) without bulk data."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from micropacs.dicom import levels, tags
from micropacs.dicom.json_model import element, first_text, from_json, text_of, to_json
from micropacs.dicom.levels import Level
from tests import dicomdata


def test_round_trip_keeps_values_and_names(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Dvořák^Antonín"
    ds.StudyDate = "20240315"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.InstanceNumber = 5
    ds.SliceThickness = "1.25"
    ds.Rows = 512
    item = Dataset()
    item.CodeValue = "X1"
    ds.ProcedureCodeSequence = Sequence([item])
    data = to_json(ds)
    assert data["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Dvořák^Antonín"}]}
    assert data["00200013"]["Value"] == [5]
    assert data["00081032"]["Value"][0]["00080100"]["Value"] == ["X1"]
    back = from_json(data)
    assert back.PatientName == "Dvořák^Antonín"
    assert back.ProcedureCodeSequence[0].CodeValue == "X1"
    assert back.Rows == 512


def test_latin1_file_reads_as_unicode(tmp_path: Path) -> None:
    study = dicomdata.StudySpec(patient_name="Müller^Jürgen", charset="ISO_IR 100")
    path = dicomdata.write(dicomdata.cr_image(study, rows=16, cols=16), tmp_path / "cr.dcm")
    data = to_json(dcmread(path))
    assert first_text(data, "00100010") == "Müller^Jürgen"


def test_bulk_data_and_file_meta_are_left_out(tmp_path: Path) -> None:
    path = dicomdata.write(dicomdata.ct_image(rows=64, cols=64), tmp_path / "ct.dcm")
    ds = dcmread(path)
    ds.add_new(0x00091010, "OB", b"\x01" * 16)  # small binary: kept
    ds.add_new(0x00091011, "OB", b"\x01" * 4096)  # large binary: bulk data
    data = to_json(ds)
    assert "7FE00010" not in data
    assert "00020010" not in data
    assert "00091010" in data
    assert "00091011" not in data


def test_text_of_values() -> None:
    assert text_of({"vr": "PN", "Value": [{"Alphabetic": "A^B"}]}) == ["A^B"]
    assert text_of({"vr": "IS", "Value": [5, 6]}) == ["5", "6"]
    assert text_of({"vr": "LO"}) == []
    assert first_text({}, "00100010") == ""


def test_text_of_nulls_blanks_and_malformed_elements() -> None:
    element_with_gaps = {"vr": "PN", "Value": [None, {"Alphabetic": " "}, {}, "X^Y"]}
    assert text_of(element_with_gaps) == ["", " ", "", "X^Y"]
    assert text_of(element_with_gaps, skip_blank=True) == ["X^Y"]
    assert text_of(None) == []
    assert text_of({"vr": "CS", "Value": "CT"}) == []  # not an array: not DICOM JSON


def test_element_builds_what_to_json_writes() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AccessionNumber = None
    data = to_json(ds)
    assert data[tags.MODALITY] == element("CS", "CT")
    assert data[tags.tag_of("ImageType")] == element("CS", "ORIGINAL", "PRIMARY")
    assert data[tags.ACCESSION_NUMBER] == element("SH") == {"vr": "SH"}


def test_tags_are_json_keys_from_the_dictionary() -> None:
    assert tags.STUDY_INSTANCE_UID == "0020000D"
    assert tags.SERIES_DESCRIPTION == "0008103E"
    assert tags.PIXEL_DATA == "7FE00010"
    with pytest.raises(KeyError):
        tags.tag_of("StudyInstanceUid")


def test_unique_keys_of_each_level_with_their_vrs() -> None:
    assert levels.UNIQUE_KEYS[Level.PATIENT] == (("00100020", "LO"),)
    assert levels.UNIQUE_KEYS[Level.STUDY] == (("0020000D", "UI"),)
    assert levels.UNIQUE_KEYS[Level.IMAGE] == (
        ("0020000D", "UI"),
        ("0020000E", "UI"),
        ("00080018", "UI"),
    )
    assert all(levels.UNIQUE_KEYS[level][-1][0] == levels.UNIQUE_KEY[level] for level in Level)
