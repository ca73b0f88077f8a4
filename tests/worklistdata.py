"""Worklist items and MPPS attributes as a RIS and a modality send them (PS3.4 K.6, F.7)."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.sequence import Sequence

from micropacs.dicom.json_model import to_json
from micropacs.ports import WorklistItem


def scheduled(
    item_id: str,
    *,
    station: str = "CT01",
    date: str = "20260301",
    time: str = "080000",
    modality: str = "CT",
    physician: str = "Novak^Jan",
    patient: str = "Doe^John",
    patient_id: str = "P1",
    issuer: str = "HOSP",
    accession: str = "A1",
    procedure: str = "RP1",
    study: str = "2.25.1",
    status: str = "SCHEDULED",
    charset: str = "",
) -> WorklistItem:
    """One scheduled procedure step as the store keeps it."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.AccessionNumber = accession
    ds.RequestedProcedureID = procedure
    ds.RequestedProcedureDescription = "CT head"
    ds.StudyInstanceUID = study
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = time
    step.Modality = modality
    step.ScheduledPerformingPhysicianName = physician
    step.ScheduledProcedureStepID = f"S{item_id}"
    step.ScheduledProcedureStepDescription = "head"
    step.ScheduledProcedureStepStatus = status
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return WorklistItem(item_id=item_id, dataset=to_json(ds))


def in_progress(study: str = "2.25.11", step_id: str = "S1") -> Dataset:
    """An N-CREATE's attributes as a modality sends them (PS3.4 Table F.7.2-1)."""
    ds = Dataset()
    ssa = Dataset()
    ssa.StudyInstanceUID = study
    ssa.ReferencedStudySequence = Sequence()
    ssa.AccessionNumber = "A1"
    ssa.RequestedProcedureID = "RP1"
    ssa.RequestedProcedureDescription = "CT head"
    ssa.ScheduledProcedureStepID = step_id
    ssa.ScheduledProcedureStepDescription = "head"
    ssa.ScheduledProtocolCodeSequence = Sequence()
    ds.ScheduledStepAttributesSequence = Sequence([ssa])
    ds.PatientName = "Doe^John"
    ds.PatientID = "P1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.ReferencedPatientSequence = Sequence()
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedStationName = "CT one"
    ds.PerformedLocation = "room 1"
    ds.PerformedProcedureStepStartDate = "20260301"
    ds.PerformedProcedureStepStartTime = "081500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepEndDate = None
    ds.PerformedProcedureStepEndTime = None
    ds.PerformedProcedureStepDescription = "CT head"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = Sequence()
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence()
    return ds


def completed(status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20260301"
    ds.PerformedProcedureStepEndTime = "083000"
    series = Dataset()
    series.SeriesInstanceUID = "2.25.99"
    series.RetrieveAETitle = ""
    series.SeriesDescription = "head"
    series.PerformingPhysicianName = ""
    series.OperatorsName = ""
    series.ProtocolName = "head"
    series.ReferencedImageSequence = Sequence()
    series.ReferencedNonImageCompositeSOPInstanceSequence = Sequence()
    ds.PerformedSeriesSequence = Sequence([series])
    return ds
