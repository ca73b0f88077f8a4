"""The Query/Retrieve levels: their unique keys and the attributes of each (PS3.4 C.6).

The catalog keeps each level's attributes once (a patient's name with the
patient, a study's date with the study) and answers a query at one level with
the attributes of that level and above. Attributes not listed at an upper
level (PS3.4 C.6.1.1.2-C.6.1.1.4, C.6.2.1) belong to the instance (IMAGE level).
"""

from __future__ import annotations

from enum import StrEnum

from pydicom.datadict import dictionary_VR

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.tags import tag_of


class Level(StrEnum):
    """Query/Retrieve levels (PS3.4 C.3)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
"""The levels from the top of the hierarchy down (PS3.4 C.3)."""

UNIQUE_KEY: dict[Level, str] = {
    Level.PATIENT: tags.PATIENT_ID,
    Level.STUDY: tags.STUDY_INSTANCE_UID,
    Level.SERIES: tags.SERIES_INSTANCE_UID,
    Level.IMAGE: tags.SOP_INSTANCE_UID,
}
"""The unique key of each level (PS3.4 C.6.1.1.2-C.6.1.1.5)."""


def _keyed(*path: Level) -> tuple[tuple[str, str], ...]:
    return tuple((UNIQUE_KEY[level], dictionary_VR(int(UNIQUE_KEY[level], 16))) for level in path)


UNIQUE_KEYS: dict[Level, tuple[tuple[str, str], ...]] = {
    Level.PATIENT: _keyed(Level.PATIENT),
    Level.STUDY: _keyed(Level.STUDY),
    Level.SERIES: _keyed(Level.STUDY, Level.SERIES),
    Level.IMAGE: _keyed(Level.STUDY, Level.SERIES, Level.IMAGE),
}
"""(tag, VR) of the unique keys a response at each level holds: its own and those of
the levels above it, from STUDY down as in the Study Root model (PS3.4 C.4.1.1.3.2,
C.6.2.1); a PATIENT response holds PatientID alone."""

_PATIENT = [
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "EthnicGroup",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
]
_STUDY = [
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyID",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "StudyDescription",
    "ProcedureCodeSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "Occupation",
    "AdditionalPatientHistory",
    "ReasonForPerformedProcedureCodeSequence",
    "ModalitiesInStudy",
    "SOPClassesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
]
_SERIES = [
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "SeriesDescription",
    "PatientPosition",
    "ContrastBolusAgent",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "ProtocolName",
    "StationName",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "FrameOfReferenceUID",
    "Laterality",
    "OperatorsName",
    "PerformingPhysicianName",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "RequestAttributesSequence",
    "NumberOfSeriesRelatedInstances",
]

LEVEL_OF_TAG: dict[str, Level] = {
    **{tag_of(k): Level.PATIENT for k in _PATIENT},
    **{tag_of(k): Level.STUDY for k in _STUDY},
    **{tag_of(k): Level.SERIES for k in _SERIES},
}


def level_of(tag: str) -> Level:
    """The level an attribute belongs to; IMAGE unless listed at an upper level."""
    return LEVEL_OF_TAG.get(tag.upper(), Level.IMAGE)


def split_by_level(header: DicomJson) -> dict[Level, DicomJson]:
    """A header's attributes grouped by the level they belong to."""
    parts: dict[Level, DicomJson] = {level: {} for level in LEVEL_ORDER}
    for tag, element in header.items():
        parts[level_of(tag)][tag] = element
    return parts
