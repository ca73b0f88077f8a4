"""MPPS (PS3.4 F.7) of the worklist service, with pynetdicom as the modality's MPPS SCU."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom.association import Association

from micropacs.dicom.json_model import first_text, to_json
from micropacs.dicom.tags import tag_of
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicom.worklist import PERFORMED_STEP_STATUS, keys_of
from micropacs.events import MPPS, WORKLIST
from services.index.metrics import IndexMetrics
from services.index.workflow import WorkflowApplier
from services.worklist.metrics import WorklistMetrics
from services.worklist.mpps import MPPS_SOP_CLASS, RECENT_SECONDS, PerformedSteps
from services.worklist.mpps_checks import Refusal
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
NO_LONGER_UPDATABLE = 0xA710
PATIENT_ID = tag_of("PatientID")


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


def item_status(pacs: Running, item_id: str) -> str:
    found = pacs.loop_call(pacs.worklist.item(item_id))
    assert found is not None
    return keys_of(found.dataset).status


def step_status(pacs: Running, uid: str) -> str:
    found = pacs.loop_call(pacs.worklist.step(uid))
    return "" if found is None else first_text(found.dataset, PERFORMED_STEP_STATUS)


def apply_index(pacs: Running) -> None:
    """What the index does with the published MPPS events (its workflow applier, the same
    store), now, whether or not the service's index has already (it is idempotent)."""
    applier = WorkflowApplier(
        pacs.bus, pacs.worklist, IndexMetrics(CollectorRegistry()), pacs.settings.index
    )
    pacs.loop_call(applier.process(pacs.published(MPPS)))


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
    # The scheduled step follows through the index alone: the SCP publishes no status.
    assert events(pacs, WORKLIST) == []
    apply_index(pacs)
    assert item_status(pacs, "1") == "COMPLETED"
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
    assert create(mpps, in_progress(step_id="S2"), uid)[0] == DUPLICATE_SOP_INSTANCE


def test_the_same_create_sent_again_answers_success(pacs: Running, mpps: Association) -> None:
    # A modality that lost the first answer retries; a different one is still a duplicate.
    uid = generate_uid()
    assert create(mpps, in_progress(), uid) == (SUCCESS, "")
    assert create(mpps, in_progress(), uid) == (SUCCESS, "")
    assert create(mpps, in_progress(step_id="S2"), uid)[0] == DUPLICATE_SOP_INSTANCE
    assert [e["sop_instance_uid"] for e in events(pacs, MPPS)] == [uid]


def test_the_same_create_is_judged_against_the_store_once_forgotten(pacs: Running) -> None:
    now = [0.0]
    steps = PerformedSteps(
        pacs.bus, pacs.worklist, WorklistMetrics(CollectorRegistry()), clock=lambda: now[0]
    )
    uid, attributes = generate_uid(), to_json(in_progress())
    pacs.loop_call(steps.create(uid, attributes, "CT01"))
    apply_index(pacs)
    assert step_status(pacs, uid) == "IN PROGRESS"
    now[0] += RECENT_SECONDS + 1  # this process no longer remembers it
    pacs.loop_call(steps.create(uid, attributes, "CT01"))
    with pytest.raises(Refusal) as refused:
        pacs.loop_call(steps.create(uid, to_json(in_progress(step_id="S2")), "CT01"))
    assert refused.value.status == DUPLICATE_SOP_INSTANCE
    assert [e["sop_instance_uid"] for e in events(pacs, MPPS)] == [uid]


def test_a_set_after_the_final_state_carries_error_id_a710(mpps: Association) -> None:
    uid = generate_uid()
    assert create(mpps, in_progress(), uid)[0] == SUCCESS
    assert update(mpps, completed(), uid)[0] == SUCCESS
    status, _ = mpps.send_n_set(completed("DISCONTINUED"), MPPS_SOP_CLASS, uid)
    assert status is not None
    assert int(status.Status) == PROCESSING_FAILURE
    assert status.get("ErrorID") == NO_LONGER_UPDATABLE


def test_a_not_allowed_attribute_sent_again_unchanged_is_accepted(
    pacs: Running, mpps: Association
) -> None:
    uid = generate_uid()
    sent = in_progress()
    assert create(mpps, sent, uid)[0] == SUCCESS
    again = completed()
    for keyword in ("PatientID", "PatientName", "PerformedProcedureStepStartTime", "Modality"):
        setattr(again, keyword, getattr(sent, keyword))
    again.ScheduledStepAttributesSequence = sent.ScheduledStepAttributesSequence
    again.ReferencedPatientSequence = Sequence()  # empty again
    again.PerformedStationName = "CT one"
    assert update(mpps, again, uid) == (SUCCESS, "")
    [_, updated] = events(pacs, MPPS)
    assert PATIENT_ID not in updated["changes"]  # type: ignore[operator]


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
