"""The DICOM JSON keys of the attributes micropacs names in code.

The DICOM JSON model (PS3.18 F.2) keys each attribute of a dataset by its tag
written as eight upper-case hexadecimal digits, group then element
("GGGGEEEE"). Every constant here is derived once from
pydicom's copy of the data dictionary (PS3.6 section 6) by :func:`tag_of`, so
no module writes a tag as a literal and a mistyped keyword fails at import.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword


def tag_of(keyword: str) -> str:
    """The DICOM JSON key ("GGGGEEEE", PS3.18 F.2) of a keyword of the data dictionary (PS3.6 6)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"unknown DICOM keyword {keyword!r}")
    return f"{tag:08X}"


# Identification of the query and of the character set (PS3.4 C.4.1.1.3, PS3.3 C.12.1.1.2)
SPECIFIC_CHARACTER_SET = tag_of("SpecificCharacterSet")
QUERY_RETRIEVE_LEVEL = tag_of("QueryRetrieveLevel")
RETRIEVE_AE_TITLE = tag_of("RetrieveAETitle")
INSTANCE_AVAILABILITY = tag_of("InstanceAvailability")
STORAGE_MEDIA_FILE_SET_ID = tag_of("StorageMediaFileSetID")
STORAGE_MEDIA_FILE_SET_UID = tag_of("StorageMediaFileSetUID")
RETRIEVE_URL = tag_of("RetrieveURL")

# Patient (PS3.4 C.6.1.1.2)
PATIENT_NAME = tag_of("PatientName")
PATIENT_ID = tag_of("PatientID")
ISSUER_OF_PATIENT_ID = tag_of("IssuerOfPatientID")
PATIENT_BIRTH_DATE = tag_of("PatientBirthDate")
PATIENT_SEX = tag_of("PatientSex")

# Study (PS3.4 C.6.1.1.3)
STUDY_INSTANCE_UID = tag_of("StudyInstanceUID")
STUDY_DATE = tag_of("StudyDate")
STUDY_TIME = tag_of("StudyTime")
ACCESSION_NUMBER = tag_of("AccessionNumber")
STUDY_ID = tag_of("StudyID")
REFERRING_PHYSICIAN_NAME = tag_of("ReferringPhysicianName")
STUDY_DESCRIPTION = tag_of("StudyDescription")

# Series (PS3.4 C.6.1.1.4)
SERIES_INSTANCE_UID = tag_of("SeriesInstanceUID")
MODALITY = tag_of("Modality")
SERIES_NUMBER = tag_of("SeriesNumber")
SERIES_DATE = tag_of("SeriesDate")
SERIES_TIME = tag_of("SeriesTime")
SERIES_DESCRIPTION = tag_of("SeriesDescription")
BODY_PART_EXAMINED = tag_of("BodyPartExamined")
PROTOCOL_NAME = tag_of("ProtocolName")
STATION_NAME = tag_of("StationName")
INSTITUTION_NAME = tag_of("InstitutionName")
MANUFACTURER = tag_of("Manufacturer")

# Composite instance (PS3.4 C.6.1.1.5) and the image pixel module (PS3.3 C.7.6.3)
SOP_INSTANCE_UID = tag_of("SOPInstanceUID")
SOP_CLASS_UID = tag_of("SOPClassUID")
INSTANCE_NUMBER = tag_of("InstanceNumber")
ROWS = tag_of("Rows")
BITS_ALLOCATED = tag_of("BitsAllocated")
PIXEL_DATA = tag_of("PixelData")

# Computed attributes of the upper levels (PS3.4 C.3.4)
MODALITIES_IN_STUDY = tag_of("ModalitiesInStudy")
SOP_CLASSES_IN_STUDY = tag_of("SOPClassesInStudy")
NUMBER_OF_PATIENT_RELATED_STUDIES = tag_of("NumberOfPatientRelatedStudies")
NUMBER_OF_PATIENT_RELATED_SERIES = tag_of("NumberOfPatientRelatedSeries")
NUMBER_OF_PATIENT_RELATED_INSTANCES = tag_of("NumberOfPatientRelatedInstances")
NUMBER_OF_STUDY_RELATED_SERIES = tag_of("NumberOfStudyRelatedSeries")
NUMBER_OF_STUDY_RELATED_INSTANCES = tag_of("NumberOfStudyRelatedInstances")
NUMBER_OF_SERIES_RELATED_INSTANCES = tag_of("NumberOfSeriesRelatedInstances")

# The Store Instances response of STOW-RS (PS3.18 10.5)
REFERENCED_SOP_SEQUENCE = tag_of("ReferencedSOPSequence")
FAILED_SOP_SEQUENCE = tag_of("FailedSOPSequence")
REFERENCED_SOP_CLASS_UID = tag_of("ReferencedSOPClassUID")
REFERENCED_SOP_INSTANCE_UID = tag_of("ReferencedSOPInstanceUID")
FAILURE_REASON = tag_of("FailureReason")
WARNING_REASON = tag_of("WarningReason")
