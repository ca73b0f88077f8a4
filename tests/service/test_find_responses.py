"""C-FIND responses encoded straight from the catalog (micropacs.dimse.find_responses),
read by a real pynetdicom SCU in each transfer syntax the qr service accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from micropacs.dimse import find_responses
from tests import dicomdata
from tests.service.conftest import Running
from tests.service.peers import FIND, associate, ct_files, find, store, study_identifier

NAMES = {"latin": "Müller^Zoë", "czech": "Dvořák^Jiří", "ascii": "Smith^John"}


def stored_studies(pacs: Running, tmp_path: Path) -> dict[str, str]:
    """One study per name in NAMES, stored in UTF-8; their StudyInstanceUIDs by name."""
    uids: dict[str, str] = {}
    for key, name in NAMES.items():
        study = dicomdata.StudySpec(patient_name=name, patient_id=f"P-{key}", charset="ISO_IR 192")
        files = ct_files(tmp_path / key, 2, study=study)
        assert store(pacs, *files) == [0x0000, 0x0000]
        pacs.wait_indexed([dcmread(path).SOPInstanceUID for path in files])
        uids[key] = study.study_instance_uid
    return uids


def study_query(charset: str | None) -> Dataset:
    query = study_identifier(
        StudyInstanceUID="",
        PatientName="",
        PatientID="P-*",
        StudyDate="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedInstances="",
        ReferencedStudySequence=[],
    )
    if charset:
        query.SpecificCharacterSet = charset
    return query


@pytest.mark.parametrize(
    "syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    ],
)
def test_study_matches_reach_the_scu_in_the_negotiated_syntax(
    pacs: Running, tmp_path: Path, syntax: str
) -> None:
    assert find_responses.installed(), "the qr service's AE did not install the encoder"
    uids = stored_studies(pacs, tmp_path)
    with associate(pacs, [(FIND, [syntax])]) as assoc:
        matches, status = find(assoc, study_query("ISO_IR 100"))

    assert status == 0x0000
    by_uid = {str(m.StudyInstanceUID): m for m in matches}
    assert set(by_uid) == set(uids.values())
    for key, uid in uids.items():
        match = by_uid[uid]
        assert str(match.PatientName) == NAMES[key]
        assert match.ModalitiesInStudy == "CT"
        assert int(match.NumberOfStudyRelatedInstances) == 2
        assert match.ReferencedStudySequence == []  # a Type 2 return key, empty
        assert match.StudyDate == "20240115"
    # Asked for ISO_IR 100: kept where it holds the name, UTF-8 where it does not.
    assert by_uid[uids["latin"]].SpecificCharacterSet == "ISO_IR 100"
    assert by_uid[uids["czech"]].SpecificCharacterSet == "ISO_IR 192"
    assert by_uid[uids["ascii"]].SpecificCharacterSet == "ISO_IR 100"


def test_image_matches_of_a_series_in_utf8(pacs: Running, tmp_path: Path) -> None:
    study = dicomdata.StudySpec(patient_name=NAMES["czech"], charset="ISO_IR 192")
    files = ct_files(tmp_path / "in", 12, study=study)
    assert store(pacs, *files) == [0x0000] * 12
    sent = [dcmread(path, stop_before_pixels=True) for path in files]
    pacs.wait_indexed([ds.SOPInstanceUID for ds in sent])
    query = study_identifier(
        "IMAGE",
        StudyInstanceUID=study.study_instance_uid,
        SeriesInstanceUID=sent[0].SeriesInstanceUID,
        SOPInstanceUID="",
        InstanceNumber="",
        Rows=None,
        PatientName="",
    )
    with associate(pacs, [FIND]) as assoc:
        matches, status = find(assoc, query)

    assert status == 0x0000
    assert sorted((int(m.InstanceNumber), str(m.SOPInstanceUID)) for m in matches) == sorted(
        (int(ds.InstanceNumber), str(ds.SOPInstanceUID)) for ds in sent
    )
    assert {(m.Rows, str(m.PatientName), m.SpecificCharacterSet) for m in matches} == {
        (64, NAMES["czech"], "ISO_IR 192")
    }
