"""HL7 v2 orders and ADT messages mapped to worklist and patient events (pure functions)."""

from __future__ import annotations

import pytest

from micropacs.dicom import tags
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import first_text
from micropacs.events import PatientMerged, PatientUpdated, WorklistItemPut, WorklistItemStatus
from services.worklist.hl7_dispatch import Hl7Event, events_of
from services.worklist.hl7_message import ErrorCode, Hl7Reject, decode
from services.worklist.hl7_orders import (
    FILLER_ORDER_NUMBER,
    PLACER_ORDER_NUMBER,
    REQUESTING_PHYSICIAN,
)
from tests.unit.hl7_samples import PID, adt, omi, orm

UTF8 = "UNICODE UTF-8"


def mapped(text: str, codec: str = "utf-8") -> list[Hl7Event]:
    return list(events_of(decode(text.encode(codec)), "DEFAULT"))


def refusal(text: str, codec: str = "utf-8") -> Hl7Reject:
    with pytest.raises(Hl7Reject) as caught:
        mapped(text, codec)
    return caught.value


def test_orm_new_order_is_a_whole_item_as_ihe_maps_it() -> None:
    [put] = mapped(orm(charset=UTF8))
    assert isinstance(put, WorklistItemPut)
    assert put.item_id == "FL-1:SPS-1"
    data = put.dataset
    keys = wl.keys_of(data)
    assert (keys.patient_id, keys.issuer_of_patient_id) == ("PAT-7", "HOSP")
    assert keys.patient_name == "Novák^Jiří^^Ing."  # XPN prefix (PID-5.5) is PN's 4th
    assert (keys.accession_number, keys.requested_procedure_id) == ("ACC-1", "RP-1")
    assert (keys.step_id, keys.modality, keys.status) == ("SPS-1", "CT", wl.SCHEDULED)
    assert (keys.start_date, keys.start_time) == ("20260105", "1030")
    assert keys.study_instance_uid == "1.2.3.4.5"  # ZDS-1
    assert keys.performing_physician == "Tech^Anna"  # OBR-34 CNN subcomponents
    assert first_text(data, tags.PATIENT_BIRTH_DATE) == "19700131"
    assert first_text(data, tags.PATIENT_SEX) == "M"
    assert first_text(data, tags.REFERRING_PHYSICIAN_NAME) == "Welby^Marcus^^Dr"
    assert first_text(data, REQUESTING_PHYSICIAN) == "House^Gregory"  # ORC-12
    assert (first_text(data, PLACER_ORDER_NUMBER), first_text(data, FILLER_ORDER_NUMBER)) == (
        "PL-1",
        "FL-1",
    )
    assert first_text(data, wl.REQUESTED_PROCEDURE_DESCRIPTION) == "CT head"
    step = wl.scheduled_step(data)
    assert first_text(step, wl.SCHEDULED_STEP_DESCRIPTION) == "Head without contrast"
    assert first_text(data, tags.SPECIFIC_CHARACTER_SET) == "ISO_IR 192"


def test_omi_gives_one_item_per_ipc_with_its_station_and_study() -> None:
    first, second = mapped(omi(charset=UTF8))
    assert isinstance(first, WorklistItemPut) and isinstance(second, WorklistItemPut)
    assert (first.item_id, second.item_id) == ("FL-2:SPS-A", "FL-2:SPS-B")
    keys = wl.keys_of(first.dataset)
    assert keys.station_ae_titles == ("MR_AE1", "MR_AE2")
    assert (keys.study_instance_uid, keys.accession_number) == ("1.2.840.99.1", "ACC-2")
    assert (keys.start_date, keys.start_time, keys.modality) == ("20260106", "141500", "MR")


@pytest.mark.parametrize(("control", "status"), [("CA", wl.CANCELED), ("DC", wl.DISCONTINUED)])
def test_cancel_and_discontinue_change_the_status_of_the_same_item(
    control: str, status: str
) -> None:
    [put] = mapped(orm(charset=UTF8))
    [change] = mapped(orm(control, charset=UTF8))
    assert isinstance(change, WorklistItemStatus) and isinstance(put, WorklistItemPut)
    assert (change.item_id, change.status) == (put.item_id, status)


def test_a_study_uid_is_derived_from_the_order_when_it_carries_none() -> None:
    [first] = mapped(orm(zds="", charset=UTF8))
    [again] = mapped(orm("XO", zds="", charset=UTF8))
    assert isinstance(first, WorklistItemPut) and isinstance(again, WorklistItemPut)
    uid = wl.keys_of(first.dataset).study_instance_uid
    assert uid.startswith("2.25.") and uid == wl.keys_of(again.dataset).study_instance_uid


@pytest.mark.parametrize(
    ("charset", "codec", "dicom"),
    [
        ("8859/1", "iso8859-1", "ISO_IR 100"),
        ("8859/2", "iso8859-2", "ISO_IR 101"),
        (UTF8, "utf-8", "ISO_IR 192"),
    ],
)
def test_character_sets(charset: str, codec: str, dicom: str) -> None:
    name = "Müller^Jürgen" if charset == "8859/1" else "Dvořák^Žofie"
    pid = PID.replace("Novák^Jiří^^^Ing.", name)
    [updated] = mapped(adt("A08", pid, charset), codec)
    assert isinstance(updated, PatientUpdated)
    assert first_text(updated.attributes, tags.PATIENT_NAME) == name
    assert first_text(updated.attributes, tags.SPECIFIC_CHARACTER_SET) == dicom


def test_a40_merges_the_mrg_patient_into_the_pid_patient() -> None:
    [merged] = mapped(adt("A40", "PID|1||NEW-1^^^HOSP", extra="MRG|OLD-1"))
    assert merged == PatientMerged(
        patient_id="NEW-1",
        issuer_of_patient_id="HOSP",
        prior_patient_id="OLD-1",
        prior_issuer_of_patient_id="DEFAULT",
    )


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        (orm(pid="PID|1||^^^HOSP|Novak", charset=UTF8), ErrorCode.REQUIRED_FIELD_MISSING, "PID-3"),
        (adt("A03", charset=UTF8), ErrorCode.UNSUPPORTED_EVENT_CODE, "MSH-9.2"),
        (
            adt("A08", charset=UTF8).replace("ADT^A08", "ORU^R01"),
            ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
            "MSH-9.1",
        ),
        (
            adt("A08", charset=UTF8).replace("|2.5.1|", "|2.1|"),
            ErrorCode.UNSUPPORTED_VERSION_ID,
            "MSH-12",
        ),
        (
            adt("A08", charset=UTF8).replace("|P|", "|T|"),
            ErrorCode.UNSUPPORTED_PROCESSING_ID,
            "MSH-11",
        ),
        (orm("ZZ", charset=UTF8), ErrorCode.TABLE_VALUE_NOT_FOUND, "ORC-1"),
        (adt("A08", charset="8859/15"), ErrorCode.TABLE_VALUE_NOT_FOUND, "MSH-18"),
        (adt("A08", "PID|1||P1||Doe||1970"), ErrorCode.DATA_TYPE_ERROR, "PID-7"),
        (adt("A40", "PID|1||NEW-1"), ErrorCode.SEGMENT_SEQUENCE_ERROR, "MRG"),
    ],
)
def test_refusals_name_the_field(text: str, code: ErrorCode, where: str) -> None:
    reject = refusal(text)
    assert (reject.code, str(reject.location), reject.ack_code) == (code, where, "AR")


def test_non_ascii_bytes_without_msh18_are_refused_not_garbled() -> None:
    reject = refusal(adt("A08"))  # the default PID's name is not ASCII
    assert (reject.code, str(reject.location)) == (ErrorCode.DATA_TYPE_ERROR, "MSH-18")
