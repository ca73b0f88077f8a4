"""The worklist, MPPS and patient events: encoded and decoded as they are, refused otherwise."""

from __future__ import annotations

import json

import pytest

from micropacs.dicom import worklist
from micropacs.dicom.json_model import element
from micropacs.errors import InvalidInput
from micropacs.events import (
    PatientMerged,
    PatientUpdated,
    PerformedStepCreated,
    PerformedStepUpdated,
    WorkflowEvent,
    WorklistItemPut,
    WorklistItemRemoved,
    WorklistItemStatus,
    decode_workflow_event,
    patient_key,
)

ITEM = {
    "00100010": element("PN", "Dvořák^Antonín"),
    worklist.SCHEDULED_PROCEDURE_STEP_SEQUENCE: {
        "vr": "SQ",
        "Value": [{worklist.SCHEDULED_STATION_AE_TITLE: element("AE", "CT1")}],
    },
}

EVENTS: list[WorkflowEvent] = [
    WorklistItemPut(item_id="F1/S1", dataset=ITEM, source="hl7"),
    WorklistItemStatus(item_id="F1/S1", status=worklist.CANCELED, source="hl7"),
    WorklistItemRemoved(item_id="F1/S1", source="api"),
    PerformedStepCreated(
        sop_instance_uid="1.2.3", dataset=ITEM, calling_ae="CT1", received_at="2026-12-01T00:00:00Z"
    ),
    PerformedStepUpdated(sop_instance_uid="1.2.3", changes={}, received_at="2026-12-01T00:01:00Z"),
    PatientUpdated(patient_id="P1", issuer_of_patient_id="H", attributes=ITEM),
    PatientMerged(
        patient_id="P1",
        issuer_of_patient_id="H",
        prior_patient_id="P0",
        prior_issuer_of_patient_id="H",
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: event.type)
def test_an_event_decodes_to_itself(event: WorkflowEvent) -> None:
    assert decode_workflow_event(event.to_bytes()) == event


def test_names_stay_unicode_on_the_wire() -> None:
    assert "Dvořák".encode() in EVENTS[0].to_bytes()


def test_keys_keep_one_item_or_one_patient_in_order() -> None:
    assert EVENTS[0].key == EVENTS[1].key == "F1/S1"
    assert EVENTS[3].key == EVENTS[4].key == "1.2.3"
    assert EVENTS[5].key == EVENTS[6].key == patient_key("P1", "H") == "H|P1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type":"instance.stored","version":1}', "not a worklist"),
        (b'{"type":"mpps.updated","version":2}', "v1"),
        (b'{"type":"worklist.item.removed","version":1,"item_id":"x"}', "malformed"),
        (
            b'{"type":"worklist.item.removed","version":1,"item_id":"x","source":"a","extra":1}',
            "malformed",
        ),
    ],
)
def test_other_payloads_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        decode_workflow_event(payload)


def test_status_of_an_item_changes_only_its_step() -> None:
    changed = worklist.with_status(ITEM, worklist.STARTED)
    assert worklist.keys_of(changed).status == worklist.STARTED
    assert worklist.keys_of(ITEM).status == worklist.SCHEDULED
    assert worklist.keys_of(changed).station_ae_titles == ("CT1",)
    assert json.dumps(ITEM) != json.dumps(changed)
