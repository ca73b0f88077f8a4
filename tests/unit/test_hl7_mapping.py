"""HL7 v2 orders and ADT messages mapped to worklist and patient events (pure functions)."""

from __future__ import annotations

from typing import Any

import hl7
import pytest

from micropacs.dicom import tags
from micropacs.dicom import worklist as wl
from micropacs.dicom.json_model import first_text
from micropacs.events import PatientMerged, PatientUpdated, WorklistItemPut, WorklistItemStatus
from services.worklist.hl7_ack import acknowledgement
from services.worklist.hl7_dispatch import Hl7Event, events_of
from services.worklist.hl7_message import ErrorCode, Hl7Context, Hl7Reject, Location, decode
from services.worklist.hl7_orders import (
    FILLER_ORDER_NUMBER,
    MAX_ORDER_GROUPS,
    PLACER_ORDER_NUMBER,
    REQUESTING_PHYSICIAN,
)
from tests.unit.hl7_samples import PID, adt, omi, orm

UTF8 = "UNICODE UTF-8"


def mapped(text: str, codec: str = "utf-8", **context: Any) -> list[Hl7Event]:
    return list(events_of(decode(text.encode(codec)), Hl7Context("DEFAULT", **context)))


def refusal(text: str, codec: str = "utf-8") -> Hl7Reject:
    with pytest.raises(Hl7Reject) as caught:
        mapped(text, codec)
    return caught.value


def only(events: list[Hl7Event]) -> WorklistItemPut:
    [put] = events
    assert isinstance(put, WorklistItemPut)
    return put


def test_orm_new_order_is_a_whole_item_as_ihe_maps_it() -> None:
    [put] = mapped(orm(charset=UTF8))
    assert isinstance(put, WorklistItemPut)
    assert put.item_id == "PL-1:SPS-1"
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
    assert (first.item_id, second.item_id) == ("PL-2:SPS-A", "PL-2:SPS-B")
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


CONTENT, UNSUPPORTED = "AE", "AR"


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
    ack = CONTENT if code < ErrorCode.UNSUPPORTED_MESSAGE_TYPE else UNSUPPORTED
    assert (reject.code, str(reject.location), reject.ack_code) == (code, where, ack)


def test_non_ascii_bytes_without_msh18_are_refused_not_garbled() -> None:
    reject = refusal(adt("A08"))  # the default PID's name is not ASCII
    assert (reject.code, str(reject.location)) == (ErrorCode.DATA_TYPE_ERROR, "MSH-18")


def test_an_order_keeps_its_item_and_study_when_the_filler_number_comes_later() -> None:
    placer_only = orm(zds="", charset=UTF8).replace("|FL-1|", "||")
    first = only(mapped(placer_only))
    again = only(mapped(orm("XO", zds="", charset=UTF8)))
    assert first.item_id == again.item_id == "PL-1:SPS-1"
    assert wl.keys_of(first.dataset).study_instance_uid == (
        wl.keys_of(again.dataset).study_instance_uid
    )
    filler_only = only(mapped(orm(zds="", charset=UTF8).replace("|PL-1|", "||")))
    assert filler_only.item_id == "FL-1:SPS-1"


def test_an_update_changes_only_the_fields_it_sends_and_deletes_those_sent_as_null() -> None:
    [left_out] = mapped(adt("A08", "PID|1||P1^^^HOSP||Doe^John"))
    assert isinstance(left_out, PatientUpdated)
    assert tags.PATIENT_BIRTH_DATE not in left_out.attributes
    assert tags.PATIENT_SEX not in left_out.attributes
    assert first_text(left_out.attributes, tags.PATIENT_NAME) == "Doe^John"
    [deleted] = mapped(adt("A08", 'PID|1||P1^^^HOSP||Doe^John||""|""'))
    assert isinstance(deleted, PatientUpdated)
    assert deleted.attributes[tags.PATIENT_BIRTH_DATE] == {"vr": "DA"}
    assert deleted.attributes[tags.PATIENT_SEX] == {"vr": "CS"}
    [no_name] = mapped(adt("A08", "PID|1||P1^^^HOSP||||19700131|F"))
    assert isinstance(no_name, PatientUpdated)
    assert tags.PATIENT_NAME not in no_name.attributes
    assert first_text(no_name.attributes, tags.PATIENT_SEX) == "F"


def test_an_order_without_birth_date_has_it_empty_as_a_type_2_key() -> None:
    put = only(mapped(orm(pid="PID|1||P1^^^HOSP||Doe^John", charset=UTF8)))
    assert put.dataset[tags.PATIENT_BIRTH_DATE] == {"vr": "DA"}


def test_escape_sequences_are_read_in_the_message_character_set_without_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "\\H\\Dvo\\XC599\\\\N\\\\Zmine\\^Jan\\S\\Ann\\.br\\X"
    [updated] = mapped(adt("A08", f"PID|1||P1^^^HOSP||{name}", UTF8))
    assert isinstance(updated, PatientUpdated)
    assert (
        first_text(updated.attributes, tags.PATIENT_NAME) == "Dvoř^Jan Ann X"
    )  # \\S\\ is a ^ inside the given name
    assert caplog.records == []


@pytest.mark.parametrize(
    "escaped", ["Doe\\.spX\\", "Doe\\XZZ\\", "Doe\\C2842\\", "Doe\\Q\\", "Doe\\F", "Doe\\XC5\\"]
)
def test_an_unreadable_escape_is_a_data_type_error_at_its_field(
    escaped: str, caplog: pytest.LogCaptureFixture
) -> None:
    reject = refusal(adt("A08", f"PID|1||P1^^^HOSP||{escaped}", UTF8))
    assert (reject.code, str(reject.location), reject.ack_code) == (
        ErrorCode.DATA_TYPE_ERROR,
        "PID-5",
        "AE",
    )
    assert "Doe" not in caplog.text


def test_a_step_without_station_gets_the_configured_ones() -> None:
    stations = {"CT": ["CT1", "CT2"], "MR": ["MR9"]}
    put = only(mapped(orm(charset=UTF8), stations=stations))
    assert wl.keys_of(put.dataset).station_ae_titles == ("CT1", "CT2")
    by_code = {**stations, "CT-HEAD": ["HEADCT"]}
    put = only(mapped(orm(charset=UTF8), stations=by_code))
    assert wl.keys_of(put.dataset).station_ae_titles == ("HEADCT",)
    assert wl.keys_of(only(mapped(orm(charset=UTF8))).dataset).station_ae_titles == ()
    first, _ = mapped(omi(charset=UTF8), stations=stations)  # IPC-9 names its own
    assert isinstance(first, WorklistItemPut)
    assert wl.keys_of(first.dataset).station_ae_titles == ("MR_AE1", "MR_AE2")


def test_a_message_with_too_many_order_groups_is_refused() -> None:
    group = orm(charset=UTF8).split("\r")[3:5]
    many = orm(charset=UTF8).rstrip("\r") + "\r" + "\r".join(group * MAX_ORDER_GROUPS) + "\r"
    reject = refusal(many)
    assert (reject.code, str(reject.location), reject.ack_code) == (
        ErrorCode.SEGMENT_SEQUENCE_ERROR,
        "ORC",
        "AE",
    )
    assert (
        len(
            mapped(
                orm(charset=UTF8).replace("ZDS|1.2.3.4.5^MICROPACS^Application^DICOM\r", "")
                + "\r".join(group * (MAX_ORDER_GROUPS - 1))
                + "\r"
            )
        )
        == MAX_ORDER_GROUPS
    )


@pytest.mark.parametrize(
    "header",
    [
        "MSH|^~\\&|RIS|HOSP|PACS|RAD|20260101||ADT^A08|C1|P",  # stops before MSH-12
        "MSH|^~\\&|RIS|HOSP|PACS|RAD|20260101||ADT|C1|P|2.5.1",  # MSH-9 without trigger
        "MSH|^~\\&",
    ],
)
def test_a_malformed_msh_is_still_acknowledged(header: str) -> None:
    msg = decode(f"{header}\rPID|1||P1\r".encode())
    ack = hl7.parse(acknowledgement(msg, "AE", Hl7Reject(ErrorCode.REQUIRED_FIELD_MISSING, "x")))
    assert ack["MSA.F1"] == "AE"
    assert ack["MSA.F2"] == (msg.value("MSH", 10))
    assert str(ack.segment("ERR")[3][0][0]) == "101"


def test_the_ack_declares_the_message_character_set_and_escapes_its_text() -> None:
    msg = decode(adt("A08", charset="8859/2").encode("iso8859-2"))
    reject = Hl7Reject(ErrorCode.DATA_TYPE_ERROR, "PID-5 a|b^c", Location("PID", 5, 2))
    text = acknowledgement(msg, "AE", reject)
    ack = hl7.parse(text)
    assert ack["MSH.F18"] == "8859/2"
    assert (ack["MSH.F3"], ack["MSH.F5"], str(ack.segment("MSH")[9])) == (
        "MICROPACS",
        "RIS",
        "ACK^A08^ACK",
    )
    assert ack.unescape(str(ack.segment("MSA")[3])) == "PID-5 a|b^c"
    assert str(ack.segment("ERR")[2]) == "PID^1^5^^2"
