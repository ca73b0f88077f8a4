"""What both catalogs do alike with patient updates and merges (private).

A patient the RIS updated (HL7 ADT^A08) or merged (ADT^A40) has a record of
it: its demographics, which win over every stored header's, and for a merged
patient the survivor's identity, which an instance stored later under the
prior identity is filed under (as dcm4chee does). Each merge points every
patient merged into the prior one at the survivor, so a record never names a
merged patient and one lookup resolves any identity.
"""

from __future__ import annotations

from dataclasses import replace

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element
from micropacs.dicom.levels import Level, level_of
from micropacs.ports import InstanceRecord

COMPUTED = frozenset(
    {
        tags.NUMBER_OF_PATIENT_RELATED_STUDIES,
        tags.NUMBER_OF_PATIENT_RELATED_SERIES,
        tags.NUMBER_OF_PATIENT_RELATED_INSTANCES,
    }
)
"""Patient-level attributes the catalog computes (PS3.4 C.3.4), never taken from an update."""


def patient_attributes(attributes: DicomJson) -> DicomJson:
    """The Patient-level attributes of an update (PS3.4 C.6.1.1.2), computed ones left out."""
    return {
        tag: value
        for tag, value in attributes.items()
        if level_of(tag) is Level.PATIENT and tag not in COMPUTED
    }


def with_identity(attributes: DicomJson, patient_id: str, issuer: str) -> DicomJson:
    """``attributes`` naming this patient (PatientID, IssuerOfPatientID when there is one)."""
    found = {k: v for k, v in attributes.items() if k != tags.ISSUER_OF_PATIENT_ID}
    found[tags.PATIENT_ID] = element("LO", patient_id)
    if issuer:
        found[tags.ISSUER_OF_PATIENT_ID] = element("LO", issuer)
    return found


def filed_under(
    record: InstanceRecord,
    patient_id: str,
    issuer: str,
    attributes: DicomJson,
    *,
    merged: bool = False,
) -> InstanceRecord:
    """``record`` as the catalog files it: under this patient, with the RIS's attributes
    over its header's. With ``merged`` (a record of a prior patient whose survivor the
    catalog holds) none of the header's patient attributes are kept: the survivor's stay."""
    header = {
        k: v
        for k, v in record.header.items()
        if k != tags.ISSUER_OF_PATIENT_ID and not (merged and level_of(k) is Level.PATIENT)
    }
    header.update(with_identity(attributes, patient_id, issuer))
    return replace(record, patient_id=patient_id, issuer_of_patient_id=issuer, header=header)


def patient_only(attributes: DicomJson) -> DicomJson:
    """A catalog patient's stored attributes without the computed ones (what retrieval
    writes into an outgoing header)."""
    return {k: v for k, v in attributes.items() if k not in COMPUTED}
