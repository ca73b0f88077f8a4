"""What an Instance Availability Notification says, read from the catalog (PS3.4 R.2, PS3.3
C.4.23: the Instance Availability Notification Module).

One notice covers one study and everything the catalog holds of it now (not what an event
said): each series with each of its instances, ONLINE, retrievable from our AE title;
the performed steps (MPPS) that produced it, when some completed; the study's Accession
Number and Patient ID with its issuer, so the RIS finds its order without a query back.
Rejected instances (IOCM) are hidden from the catalog's answers, so from the notice too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from micropacs.dicom import tags
from micropacs.dicom.json_model import DicomJson, element, first_text, text_of
from micropacs.dicom.levels import Level
from micropacs.ports import Catalog, Query, StepReferences

IAN_SOP_CLASS = "1.2.840.10008.5.1.4.33"
"""Instance Availability Notification SOP Class (PS3.4 R.3)."""
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
"""Modality Performed Procedure Step SOP Class, the class of the referenced steps."""
ONLINE = "ONLINE"
"""Instance Availability of what the archive serves at once (PS3.3 C.4.23.1.1)."""


@dataclass(frozen=True)
class StudyContent:
    """A study as the catalog holds it: per series, its instances' (SOP Class, SOP Instance)
    UIDs; and what identifies it to the RIS."""

    study_uid: str
    series: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    accession_number: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    character_set: tuple[str, ...] = ()

    @property
    def instances(self) -> int:
        """How many instances the study holds."""
        return sum(len(members) for members in self.series.values())

    def holds(self, step: StepReferences) -> bool:
        """Whether every series ``step`` references is here with at least the instances it
        names (a series named without instances: with one at least)."""
        for series_uid, sop_uids in step.series:
            members = {sop for _, sop in self.series.get(series_uid, ())}
            if not members or not members.issuperset(sop_uids):
                return False
        return True


async def study_content(catalog: Catalog, study_uid: str) -> StudyContent:
    """What the catalog holds of the study now (empty ``series``: nothing, or all hidden)."""
    series: dict[str, list[tuple[str, str]]] = {}
    for location in await catalog.locate(study_uids=[study_uid]):
        series.setdefault(location.series_instance_uid, []).append(
            (location.sop_class_uid, location.sop_instance_uid)
        )
    identifier: DicomJson = {tags.STUDY_INSTANCE_UID: element("UI", study_uid)}
    study: DicomJson = {}
    async for found in catalog.query(Query(Level.STUDY, identifier, limit=1)):
        study = found
    return StudyContent(
        study_uid=study_uid,
        series=series,
        accession_number=first_text(study, tags.ACCESSION_NUMBER),
        patient_id=first_text(study, tags.PATIENT_ID),
        issuer_of_patient_id=first_text(study, tags.ISSUER_OF_PATIENT_ID),
        character_set=tuple(text_of(study.get(tags.SPECIFIC_CHARACTER_SET))),
    )


def notification(
    content: StudyContent, steps: Sequence[StepReferences], retrieve_ae: str
) -> Dataset:
    """The N-CREATE's attribute list (PS3.4 R.2.1, Table C.4-26 of PS3.3)."""
    ds = Dataset()
    if content.character_set:
        ds.SpecificCharacterSet = list(content.character_set)
    referenced_steps = []
    for step in steps:
        item = Dataset()
        item.ReferencedSOPClassUID = MPPS_SOP_CLASS
        item.ReferencedSOPInstanceUID = step.sop_instance_uid
        item.PerformedWorkitemCodeSequence = DicomSequence()
        referenced_steps.append(item)
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence(referenced_steps)
    ds.StudyInstanceUID = content.study_uid
    if content.accession_number:
        ds.AccessionNumber = content.accession_number
    if content.patient_id:
        ds.PatientID = content.patient_id
        if content.issuer_of_patient_id:
            ds.IssuerOfPatientID = content.issuer_of_patient_id
    referenced_series = []
    for series_uid, members in content.series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        instances = []
        for sop_class, sop_instance in members:
            instance = Dataset()
            instance.ReferencedSOPClassUID = sop_class
            instance.ReferencedSOPInstanceUID = sop_instance
            instance.InstanceAvailability = ONLINE
            instance.RetrieveAETitle = retrieve_ae
            instances.append(instance)
        series.ReferencedSOPSequence = DicomSequence(instances)
        referenced_series.append(series)
    ds.ReferencedSeriesSequence = DicomSequence(referenced_series)
    return ds
