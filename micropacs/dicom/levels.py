"""Which Query/Retrieve level each attribute belongs to (PS3.4 C.6.1.1.2-C.6.1.1.5, C.6.2.1).

The catalog keeps each level's attributes once (a patient's name with the
patient, a study's date with the study) and answers a query at one level with
the attributes of that level and above. Attributes not listed at an upper
level belong to the instance (IMAGE level).
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from micropacs.events import DicomJson
from micropacs.ports import Level

LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)


def tag_of(keyword: str) -> str:
    """The DICOM JSON key ("GGGGEEEE") of a DICOM keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {keyword!r}")
    return f"{tag:08X}"


MODALITIES_IN_STUDY = tag_of("ModalitiesInStudy")
SOP_CLASSES_IN_STUDY = tag_of("SOPClassesInStudy")
NUMBER_OF_PATIENT_RELATED_STUDIES = tag_of("NumberOfPatientRelatedStudies")
NUMBER_OF_PATIENT_RELATED_SERIES = tag_of("NumberOfPatientRelatedSeries")
NUMBER_OF_PATIENT_RELATED_INSTANCES = tag_of("NumberOfPatientRelatedInstances")
NUMBER_OF_STUDY_RELATED_SERIES = tag_of("NumberOfStudyRelatedSeries")
NUMBER_OF_STUDY_RELATED_INSTANCES = tag_of("NumberOfStudyRelatedInstances")
NUMBER_OF_SERIES_RELATED_INSTANCES = tag_of("NumberOfSeriesRelatedInstances")

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

UNIQUE_KEY: dict[Level, str] = {
    Level.PATIENT: tag_of("PatientID"),
    Level.STUDY: tag_of("StudyInstanceUID"),
    Level.SERIES: tag_of("SeriesInstanceUID"),
    Level.IMAGE: tag_of("SOPInstanceUID"),
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
