"""IOCM rejection notes for the tests: Key Object Selection documents built with pydicom.

:func:`rejection_kos` builds the note a modality or an operator's tool sends (PS3.3
A.35.4, IHE RAD TF-3 4.66): the Key Object Document module with a rejection title as its
Concept Name, and the rejected instances in its Current Requested Procedure Evidence
Sequence, grouped by study and series.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from micropacs.iocm import KEY_OBJECT_SELECTION, REJECTION_TITLES


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def evidence(references: Sequence[Dataset]) -> DicomSequence:
    """The Hierarchical SOP Instance Reference items (PS3.3 C.17.2.1) of ``references``."""
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for ds in references:
        series = studies.setdefault(str(ds.StudyInstanceUID), {})
        series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    items = []
    for study_uid, by_series in studies.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = study_uid
        series_items = []
        for series_uid, members in by_series.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = series_uid
            sops = []
            for ds in members:
                sop = Dataset()
                sop.ReferencedSOPClassUID = ds.SOPClassUID
                sop.ReferencedSOPInstanceUID = ds.SOPInstanceUID
                sops.append(sop)
            series_item.ReferencedSOPSequence = DicomSequence(sops)
            series_items.append(series_item)
        study_item.ReferencedSeriesSequence = DicomSequence(series_items)
        items.append(study_item)
    return DicomSequence(items)


def rejection_kos(
    references: Sequence[Path | Dataset], *, title: str = "113001", scheme: str = "DCM"
) -> FileDataset:
    """A KOS rejecting ``references`` (files or datasets, of one patient and study: the
    first one's), titled with the DCM code ``title``, in a series of its own."""
    headers = [
        dcmread(ref, stop_before_pixels=True) if isinstance(ref, Path) else ref
        for ref in references
    ]
    first = headers[0]
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(KEY_OBJECT_SELECTION)
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\x00" * 128)
    for keyword in (
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "ReferringPhysicianName",
    ):
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)  # type: ignore[union-attr]
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPInstanceUID = uid
    ds.Modality = "KO"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 999
    ds.InstanceNumber = 1
    ds.ContentDate = "20240115"
    ds.ContentTime = "120000"
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.ValueType = "CONTAINER"
    meaning = REJECTION_TITLES.get(title, "Of Interest")
    ds.ConceptNameCodeSequence = DicomSequence([_code(title, scheme, meaning)])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = DicomSequence([template])
    ds.CurrentRequestedProcedureEvidenceSequence = evidence(headers)
    content = []
    for header in headers:
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "IMAGE"
        ref = Dataset()
        ref.ReferencedSOPClassUID = header.SOPClassUID
        ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
        item.ReferencedSOPSequence = DicomSequence([ref])
        content.append(item)
    ds.ContentSequence = DicomSequence(content)
    return ds


def write_kos(ds: FileDataset, path: Path) -> Path:
    """``ds`` as a Part 10 file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
