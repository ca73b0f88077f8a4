"""``/api/scheduled-steps`` and ``/api/performed-steps``: the Modality Worklist's items
(list, schedule one, cancel one) and the performed procedure steps (MPPS), for people.

Scheduling and cancelling publish the worklist events (``worklist.item.put``,
``worklist.item.status``) durably before answering, as the worklist API does; the index
applies them, and reads wait for it at the read barrier. The DICOM JSON form of an item
is the worklist service's ``/api/worklist/items``; this one takes plain fields.
"""

from __future__ import annotations

import uuid
from collections import deque
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from micropacs.auth.principal import Principal
from micropacs.dicom import tags
from micropacs.dicom import worklist as model
from micropacs.dicom.json_model import DicomJson, element
from micropacs.events import MPPS, PATIENT, WORKLIST, WorklistItemPut, WorklistItemStatus
from micropacs.ports import PerformedStep, WorklistItem
from services.admin.access import OPERATOR, VIEWER, audit, context_of
from services.admin.browse import flat

SOURCE = "api"
READER = "admin"
CODE = r"^[A-Za-z0-9 _.-]{1,16}$"
Text = Annotated[str | None, Query(max_length=64)]
Date = Annotated[str | None, Query(pattern=r"^\d{8}(-\d{8})?$", description="YYYYMMDD[-YYYYMMDD]")]


class StepBody(BaseModel):
    """One procedure step to schedule (PS3.4 K.6.1: the attributes a modality picks by)."""

    patient_id: str = Field(min_length=1, max_length=64)
    patient_name: str = Field(min_length=1, max_length=320, description="Family^Given (PN)")
    patient_birth_date: str = Field("", pattern=r"^(\d{8})?$")
    patient_sex: str = Field("", pattern=r"^(M|F|O)?$")
    accession_number: str = Field(min_length=1, max_length=16)
    requested_procedure_id: str = Field(min_length=1, max_length=16)
    requested_procedure_description: str = Field("", max_length=64)
    modality: str = Field(pattern=r"^[A-Z0-9_]{1,16}$")
    station_ae_title: str = Field(
        "", pattern=r"^([\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15})?$"
    )
    start_date: str = Field(pattern=r"^\d{8}$")
    start_time: str = Field("", pattern=r"^(\d{4}(\d{2})?)?$")
    step_id: str = Field(min_length=1, max_length=16)
    step_description: str = Field("", max_length=64)

    def dataset(self) -> DicomJson:
        """The item as DICOM JSON, with a new StudyInstanceUID (PS3.5 B.2)."""
        step: DicomJson = {
            tags.MODALITY: element("CS", self.modality),
            model.SCHEDULED_START_DATE: element("DA", self.start_date),
            model.SCHEDULED_STEP_ID: element("SH", self.step_id),
            model.SCHEDULED_STEP_STATUS: element("CS", model.SCHEDULED),
        }
        optional = (
            (model.SCHEDULED_STATION_AE_TITLE, "AE", self.station_ae_title),
            (model.SCHEDULED_START_TIME, "TM", self.start_time),
            (model.SCHEDULED_STEP_DESCRIPTION, "LO", self.step_description),
        )
        step |= {tag: element(vr, value) for tag, vr, value in optional if value}
        dataset: DicomJson = {
            tags.SPECIFIC_CHARACTER_SET: element("CS", "ISO_IR 192"),
            tags.PATIENT_ID: element("LO", self.patient_id),
            tags.PATIENT_NAME: element("PN", {"Alphabetic": self.patient_name}),
            tags.ACCESSION_NUMBER: element("SH", self.accession_number),
            model.REQUESTED_PROCEDURE_ID: element("SH", self.requested_procedure_id),
            tags.STUDY_INSTANCE_UID: element("UI", f"2.25.{uuid.uuid4().int}"),
            model.SCHEDULED_PROCEDURE_STEP_SEQUENCE: {"vr": "SQ", "Value": [step]},
        }
        more = (
            (tags.PATIENT_BIRTH_DATE, "DA", self.patient_birth_date),
            (tags.PATIENT_SEX, "CS", self.patient_sex),
            (model.REQUESTED_PROCEDURE_DESCRIPTION, "LO", self.requested_procedure_description),
        )
        dataset |= {tag: element(vr, value) for tag, vr, value in more if value}
        return dict(sorted(dataset.items()))


def item_view(item: WorklistItem) -> dict[str, Any]:
    """An item for people: its id, status, keys and the whole dataset."""
    keys = model.keys_of(item.dataset)
    return {
        "id": item.item_id,
        "status": keys.status,
        "updated_at": item.updated_at,
        "patient_id": keys.patient_id,
        "patient_name": keys.patient_name,
        "accession_number": keys.accession_number,
        "modality": keys.modality,
        "station_ae_titles": list(keys.station_ae_titles),
        "start_date": keys.start_date,
        "start_time": keys.start_time,
        "step_id": keys.step_id,
        "dataset": item.dataset,
    }


def router() -> APIRouter:
    """The worklist and MPPS routes."""
    routes = APIRouter(tags=["worklist"])

    async def caught_up(request: Request, item_ids: list[str] | None = None) -> None:
        barrier = context_of(request).barrier
        if barrier is not None:
            await barrier.wait(READER, {WORKLIST: item_ids, MPPS: None, PATIENT: None})

    @routes.get("/scheduled-steps")
    async def list_steps(
        request: Request,
        _: Annotated[Principal, Depends(VIEWER)],
        patient_id: Text = None,
        patient_name: Text = None,
        accession: Text = None,
        modality: Annotated[str | None, Query(pattern=CODE)] = None,
        date: Date = None,
        status: Annotated[str | None, Query(pattern=r"^[A-Z ]{1,16}$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Worklist items matching every given filter (C-FIND matching), by start."""
        identifier: DicomJson = {}
        top = ((tags.PATIENT_ID, "LO", patient_id), (tags.ACCESSION_NUMBER, "SH", accession))
        identifier |= {tag: element(vr, value) for tag, vr, value in top if value}
        if patient_name:
            identifier[tags.PATIENT_NAME] = element("PN", {"Alphabetic": patient_name})
        inner = (
            (tags.MODALITY, "CS", modality),
            (model.SCHEDULED_START_DATE, "DA", date),
            (model.SCHEDULED_STEP_STATUS, "CS", status),
        )
        step = {tag: element(vr, value) for tag, vr, value in inner if value}
        if step:
            identifier[model.SCHEDULED_PROCEDURE_STEP_SEQUENCE] = {"vr": "SQ", "Value": [step]}
        context = context_of(request)
        await caught_up(request)
        found = context.worklist.find_items(
            identifier,
            limit=limit,
            case_insensitive_pn=context.settings.query.case_insensitive_pn,
            max_examined=context.settings.query.max_examined,
        )
        async with aclosing(found):
            return [item_view(item) async for item in found]

    @routes.post("/scheduled-steps", status_code=201)
    async def schedule_step(
        request: Request, body: StepBody, who: Annotated[Principal, Depends(OPERATOR)]
    ) -> dict[str, Any]:
        """Schedule one procedure step; modalities find it once the index applied it."""
        item = WorklistItem(item_id=uuid.uuid4().hex, dataset=body.dataset())
        event = WorklistItemPut(item_id=item.item_id, dataset=item.dataset, source=SOURCE)
        await context_of(request).bus.publish(WORKLIST, event.key, event.to_bytes())
        await audit(request, who, "api", f"worklist item {item.item_id} scheduled")
        return item_view(item)

    @routes.post("/scheduled-steps/{item_id}/cancel")
    async def cancel_step(
        request: Request, item_id: str, who: Annotated[Principal, Depends(OPERATOR)]
    ) -> dict[str, str]:
        """Cancel a step not yet over (its status becomes CANCELED)."""
        if len(item_id) > 256:
            raise HTTPException(404, "no such worklist item")
        await caught_up(request, [item_id])
        item = await context_of(request).worklist.item(item_id)
        if item is None:
            raise HTTPException(404, "no such worklist item")
        if model.is_finished(item.dataset):
            raise HTTPException(409, f"the step is {model.keys_of(item.dataset).status} already")
        event = WorklistItemStatus(item_id=item_id, status=model.CANCELED, source=SOURCE)
        await context_of(request).bus.publish(WORKLIST, event.key, event.to_bytes())
        await audit(request, who, "api", f"worklist item {item_id} canceled")
        return {"id": item_id, "status": model.CANCELED}

    @routes.get("/performed-steps")
    async def list_performed(
        request: Request,
        _: Annotated[Principal, Depends(VIEWER)],
        status: Annotated[str | None, Query(pattern=r"^[A-Z ]{1,16}$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Performed procedure steps (MPPS), newest change first."""
        await caught_up(request)
        newest: deque[PerformedStep] = deque(maxlen=limit)  # bounded, however many there are
        async for step in context_of(request).worklist.steps(status=status or ""):
            newest.append(step)
        steps = list(reversed(newest))
        return [
            {
                "sop_instance_uid": step.sop_instance_uid,
                "status": flat(step.dataset).get("PerformedProcedureStepStatus"),
                "calling_ae": step.calling_ae,
                "created_at": step.created_at,
                "updated_at": step.updated_at,
                "dataset": step.dataset,
            }
            for step in steps
        ]

    return routes
