"""Recognising IOCM rejection notes in a stored instance's header (micropacs.iocm)."""

from __future__ import annotations

import warnings

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from micropacs.dicom.json_model import to_json
from micropacs.iocm import (
    KEY_OBJECT_SELECTION,
    REJECTION_TITLES,
    MalformedRejectionNote,
    normal_time,
    rejection_note,
)
from micropacs.ports import InstanceRecord
from tests.iocmdata import rejection_kos

CT = "1.2.840.10008.5.1.4.1.1.2"
RECEIVED = "2024-01-15T10:20:00+01:00"


def image(study: str, series: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = "PAT1"
    return ds


def record_of(ds: Dataset) -> InstanceRecord:
    """The instance record of a stored dataset, as its instance.stored event carries it."""
    return InstanceRecord(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        patient_id="PAT1",
        issuer_of_patient_id="",
        object_key="default/x.dcm",
        size=1,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        storage_group="default",
        received_at=RECEIVED,
        header=to_json(ds),
    )


@pytest.fixture
def images() -> list[Dataset]:
    study = generate_uid()
    one, two = generate_uid(), generate_uid()
    return [image(study, one), image(study, one), image(study, two)]


@pytest.mark.parametrize("title", sorted(REJECTION_TITLES))
def test_each_rejection_title_rejects_what_the_evidence_names(
    images: list[Dataset], title: str
) -> None:
    kos = rejection_kos(images, title=title)
    note = rejection_note(record_of(kos))
    assert note is not None
    assert note.reason == title
    assert [
        (r.sop_instance_uid, r.series_instance_uid, r.study_instance_uid) for r in note.rejections
    ] == [
        (str(i.SOPInstanceUID), str(i.SeriesInstanceUID), str(i.StudyInstanceUID)) for i in images
    ]
    assert {r.note_uid for r in note.rejections} == {str(kos.SOPInstanceUID)}
    assert {r.rejected_at for r in note.rejections} == {"2024-01-15T09:20:00.000000+00:00"}


def test_other_objects_are_no_rejection_notes(images: list[Dataset]) -> None:
    assert rejection_note(record_of(images[0])) is None
    assert rejection_note(record_of(rejection_kos(images, title="113000"))) is None  # Of Interest
    assert rejection_note(record_of(rejection_kos(images, scheme="99LOCAL"))) is None
    not_kos = rejection_kos(images)
    not_kos.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # a Basic Text SR with that title
    assert rejection_note(record_of(not_kos)) is None


def test_a_note_never_rejects_itself_and_names_an_instance_once(images: list[Dataset]) -> None:
    kos = rejection_kos([*images, images[0]])
    own = Dataset()
    own.ReferencedSOPClassUID = KEY_OBJECT_SELECTION
    own.ReferencedSOPInstanceUID = kos.SOPInstanceUID
    series = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    series.ReferencedSOPSequence.append(own)
    note = rejection_note(record_of(kos))
    assert note is not None
    assert sorted(r.sop_instance_uid for r in note.rejections) == sorted(
        str(i.SOPInstanceUID) for i in images
    )


def _without_evidence(kos: Dataset) -> None:
    del kos.CurrentRequestedProcedureEvidenceSequence


def _empty_series(kos: Dataset) -> None:
    kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence = DicomSequence()


def _no_sops(kos: Dataset) -> None:
    series = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    del series.ReferencedSOPSequence


def _bad_uid(kos: Dataset) -> None:
    series = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    with warnings.catch_warnings():  # pydicom warns of the bad UID it is given
        warnings.simplefilter("ignore")
        series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "1.2.03"


def _no_series_uid(kos: Dataset) -> None:
    del (
        kos.CurrentRequestedProcedureEvidenceSequence[0]
        .ReferencedSeriesSequence[0]
        .SeriesInstanceUID
    )


def _no_study_uid(kos: Dataset) -> None:
    del kos.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_without_evidence, "without Current Requested Procedure Evidence"),
        (_empty_series, "no Referenced Series"),
        (_no_sops, "no Referenced SOP"),
        (_bad_uid, "invalid ReferencedSOPInstanceUID"),
        (_no_series_uid, "invalid SeriesInstanceUID"),
        (_no_study_uid, "invalid StudyInstanceUID"),
    ],
)
def test_a_malformed_note_is_refused_saying_why_without_uids(
    images: list[Dataset], damage: object, says: str
) -> None:
    kos = rejection_kos(images)
    damage(kos)  # type: ignore[operator]
    with pytest.raises(MalformedRejectionNote, match=says) as caught:
        rejection_note(record_of(kos))
    assert str(images[0].SOPInstanceUID) not in str(caught.value)
    assert "1.2.03" not in str(caught.value)


def test_a_header_that_is_no_dataset_model_is_malformed_not_a_crash(
    images: list[Dataset],
) -> None:
    header = to_json(rejection_kos(images))
    header["0040A375"] = {"vr": "SQ", "Value": ["not an item", 5]}
    record = record_of(rejection_kos(images))
    broken = InstanceRecord(**{**record.__dict__, "header": header})
    with pytest.raises(MalformedRejectionNote):
        rejection_note(broken)


def test_times_compare_in_order_as_text() -> None:
    assert normal_time("2024-01-15T10:20:00+01:00") == "2024-01-15T09:20:00.000000+00:00"
    assert normal_time("2024-01-15T09:20:00.5") == "2024-01-15T09:20:00.500000+00:00"
    assert normal_time("garbage") == "1970-01-01T00:00:00.000000+00:00"
    assert normal_time("2024-01-15T09:20:00+00:00") < normal_time("2024-01-15T09:20:00.1+00:00")
