"""MPPS (PS3.4 F.7) of the worklist service, with pynetdicom as the modality's MPPS SCU."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid
from pynetdicom.association import Association

from micropacs.dicom.uids import is_valid_uid
from micropacs.events import MPPS, WORKLIST
from services.worklist.mpps import MPPS_SOP_CLASS
from tests.service.conftest import Running
from tests.service.peers import associate
from tests.service.test_worklist_mwl import put
from tests.worklistdata import completed, in_progress, scheduled

SUCCESS = 0x0000
NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121


@pytest.fixture
def mpps(pacs: Running) -> Iterator[Association]:
    with associate(pacs, [MPPS_SOP_CLASS], ae_title="CT01") as assoc:
        yield assoc


def create(assoc: Association, ds: Dataset, uid: str | None = None) -> tuple[int, str]:
    status, _ = assoc.send_n_create(ds, MPPS_SOP_CLASS, uid)
    assert status is not None and "Status" in status, "N-CREATE timed out"
    return int(status.Status), str(status.get("ErrorComment", ""))


def update(assoc: Association, ds: Dataset, uid: str) -> tuple[int, str]:
    status, _ = assoc.send_n_set(ds, MPPS_SOP_CLASS, uid)
    assert status is not None and "Status" in status, "N-SET timed out"
    return int(status.Status), str(status.get("ErrorComment", ""))


def events(pacs: Running, topic: str) -> list[dict[str, object]]:
    return [json.loads(record.value) for record in pacs.published(topic)]


def test_the_whole_state_machine_publishes_each_step(pacs: Running, mpps: Association) -> None:
    put(pacs, scheduled("1", study="2.25.11"))
    uid = generate_uid()
    assert create(mpps, in_progress(), uid) == (SUCCESS, "")
    progress = Dataset()
    progress.PerformedProcedureStepDescription = "CT head and neck"
    assert update(mpps, progress, uid) == (SUCCESS, "")
    assert update(mpps, completed(), uid) == (SUCCESS, "")
    status, comment = update(mpps, progress, uid)
    assert status == PROCESSING_FAILURE
    assert "may no longer be updated" in comment

    published = events(pacs, MPPS)
    assert [e["type"] for e in published] == ["mpps.created", "mpps.updated", "mpps.updated"]
    assert {e["sop_instance_uid"] for e in published} == {uid}
    assert published[0]["calling_ae"] == "CT01"
    statuses = [(e["item_id"], e["status"]) for e in events(pacs, WORKLIST)]
    assert statuses == [("1", "STARTED"), ("1", "COMPLETED")]
    assert pacs.metric("micropacs_worklist_mpps_total", outcome="created") == 1
    assert pacs.metric("micropacs_worklist_mpps_total", outcome="in_progress") == 1
    assert pacs.metric("micropacs_worklist_mpps_total", outcome="completed") == 1
    assert pacs.metric("micropacs_worklist_mpps_total", outcome="0x0110") == 1


def test_discontinued_needs_no_series(pacs: Running, mpps: Association) -> None:
    uid = generate_uid()
    assert create(mpps, in_progress(), uid)[0] == SUCCESS
    stop = Dataset()
    stop.PerformedProcedureStepStatus = "DISCONTINUED"
    stop.PerformedProcedureStepEndDate = "20260301"
    stop.PerformedProcedureStepEndTime = "082000"
    assert update(mpps, stop, uid) == (SUCCESS, "")
    assert update(mpps, completed(), uid)[0] == PROCESSING_FAILURE


def test_a_second_create_of_one_instance_answers_0111(mpps: Association) -> None:
    uid = generate_uid()
    assert create(mpps, in_progress(), uid)[0] == SUCCESS
    assert create(mpps, in_progress(), uid)[0] == DUPLICATE_SOP_INSTANCE


def test_a_set_of_an_unknown_instance_answers_0112(mpps: Association) -> None:
    assert update(mpps, completed(), generate_uid())[0] == NO_SUCH_OBJECT_INSTANCE


def test_the_scp_chooses_the_uid_when_the_modality_does_not(
    pacs: Running, mpps: Association
) -> None:
    status, _ = mpps.send_n_create(in_progress(), MPPS_SOP_CLASS, None)
    assert status is not None and int(status.Status) == SUCCESS
    [created] = events(pacs, MPPS)
    assert is_valid_uid(str(created["sop_instance_uid"]))


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("PerformedStationAETitle", "absent", MISSING_ATTRIBUTE),
        ("PerformedProcedureStepStartDate", "absent", MISSING_ATTRIBUTE),
        ("ScheduledStepAttributesSequence", "absent", MISSING_ATTRIBUTE),
        ("Modality", "", MISSING_ATTRIBUTE_VALUE),
        ("PerformedProcedureStepID", "", MISSING_ATTRIBUTE_VALUE),
        ("PerformedProcedureStepStatus", "COMPLETED", INVALID_ATTRIBUTE_VALUE),
        ("PerformedProcedureStepStartDate", "2026-03-01", INVALID_ATTRIBUTE_VALUE),
    ],
)
def test_a_create_against_table_f72_1_is_refused(
    pacs: Running, mpps: Association, keyword: str, value: str, expected: int
) -> None:
    ds = in_progress()
    if value == "absent":
        delattr(ds, keyword)
    else:
        # As a modality may send it: pydicom would refuse a wrong value on assignment.
        tag = tag_for_keyword(keyword)
        assert tag is not None
        ds[tag] = DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE)
    status, comment = create(mpps, ds, generate_uid())
    assert status == expected
    assert comment
    assert events(pacs, MPPS) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"PatientID": "P9"}, NO_SUCH_ATTRIBUTE),
        ({"PerformedProcedureStepStartTime": "090000"}, NO_SUCH_ATTRIBUTE),
        ({"PerformedProcedureStepStatus": "SCHEDULED"}, INVALID_ATTRIBUTE_VALUE),
        ({"PerformedProcedureStepStatus": "COMPLETED"}, MISSING_ATTRIBUTE_VALUE),
        (
            {
                "PerformedProcedureStepStatus": "COMPLETED",
                "PerformedProcedureStepEndDate": "20260301",
                "PerformedProcedureStepEndTime": "083000",
            },
            MISSING_ATTRIBUTE_VALUE,
        ),
    ],
)
def test_a_set_against_table_f72_1_is_refused(
    pacs: Running, mpps: Association, change: dict[str, str], expected: int
) -> None:
    uid = generate_uid()
    assert create(mpps, in_progress(), uid)[0] == SUCCESS
    ds = Dataset()
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    status, comment = update(mpps, ds, uid)
    assert status == expected
    assert comment
    assert [e["type"] for e in events(pacs, MPPS)] == ["mpps.created"]
    # Refused: the step is still in progress and can be completed.
    assert update(mpps, completed(), uid)[0] == SUCCESS
