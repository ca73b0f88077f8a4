"""The Worklist page (scheduled procedure steps: list, schedule one, cancel one) and the
Procedures page (performed procedure steps, MPPS).

Scheduling and cancelling publish the worklist events the index applies, as the
worklist API does (``worklist.item.put`` with source ``api``, ``worklist.item.status``
CANCELED); the lists wait at the read barrier for what was acknowledged before.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.auth.principal import Role
from micropacs.dicom import tags
from micropacs.dicom import worklist as mwl
from micropacs.dicom.json_model import DicomJson, first_text
from micropacs.dicom.tags import tag_of
from micropacs.errors import Conflict, InvalidInput, NotFound
from micropacs.events import MPPS, PATIENT, WORKLIST, WorklistItemPut, WorklistItemStatus
from services.admin.web.access import may, require
from services.admin.web.forms import form_of
from services.admin.web.site import Site, guarded, see_other
from services.admin.web.views import dicom_date, shown_date
from services.admin.worklist_api import StepBody

SOURCE = "api"
MAX_SHOWN = 200
READER = "admin"
PERFORMED_START_DATE = tag_of("PerformedProcedureStepStartDate")
PERFORMED_START_TIME = tag_of("PerformedProcedureStepStartTime")
PERFORMED_DESCRIPTION = tag_of("PerformedProcedureStepDescription")


def _when(date: str, time: str) -> str:
    time = time.split(".")[0]
    clock = f" {time[:2]}:{time[2:4]}" if len(time) >= 4 else ""
    return shown_date(date) + clock


def item_of(form: dict[str, str]) -> DicomJson:
    """A worklist item (PS3.4 K.6.1) from the schedule form, checked and built as the REST
    API builds it (:class:`services.admin.worklist_api.StepBody`)."""
    for name, label in (
        ("patient_name", "the patient's name"),
        ("patient_id", "the patient ID"),
        ("accession", "the accession number"),
        ("modality", "the modality"),
        ("start", "the start"),
    ):
        if not form.get(name):
            raise InvalidInput(f"give {label}")
    try:
        start = datetime.fromisoformat(form["start"])
    except ValueError:
        raise InvalidInput("the start is a date and time such as 2024-01-31T08:30") from None
    accession = form["accession"]
    fields = {
        "patient_id": form["patient_id"],
        "patient_name": form["patient_name"],
        "patient_birth_date": dicom_date(form.get("birth_date", ""), "The birth date"),
        "patient_sex": form.get("sex", "").upper(),
        "accession_number": accession,
        "requested_procedure_id": accession,
        "requested_procedure_description": form.get("description", ""),
        "modality": form["modality"].upper(),
        "station_ae_title": form.get("station_ae", ""),
        "start_date": start.strftime("%Y%m%d"),
        "start_time": start.strftime("%H%M%S"),
        "step_id": accession,
        "step_description": form.get("description", ""),
    }
    try:
        return StepBody.model_validate(fields).dataset()
    except ValidationError as exc:
        raise InvalidInput(
            "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
        ) from None


class Worklists:
    """Scheduled and performed procedure steps."""

    def __init__(self, site: Site) -> None:
        self.site = site

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/worklist", self.items, methods=["GET"]),
            Route("/worklist", self.schedule, methods=["POST"]),
            Route("/worklist/{item}/cancel", self.cancel, methods=["POST"]),
            Route("/procedures", self.procedures, methods=["GET"]),
        ]

    async def _caught_up(self) -> None:
        barrier = self.site.context.barrier
        if barrier is not None:
            await barrier.wait(READER, {WORKLIST: None, MPPS: None, PATIENT: None})

    async def _page(self, request: Request, status: int = 200, **values: Any) -> Response:
        await self._caught_up()
        rows = []
        found = self.site.context.worklist.find_items({}, limit=MAX_SHOWN)
        async with aclosing(found):
            async for item in found:
                keys = mwl.keys_of(item.dataset)
                step = mwl.scheduled_step(item.dataset)
                rows.append(
                    {
                        "key": item.item_id,
                        "start": _when(keys.start_date, keys.start_time),
                        "patient_name": keys.patient_name.replace("^", ", ", 1),
                        "patient_id": keys.patient_id,
                        "accession": keys.accession_number,
                        "modality": keys.modality,
                        "station_ae": ", ".join(keys.station_ae_titles),
                        "description": first_text(step, mwl.SCHEDULED_STEP_DESCRIPTION),
                        "status": keys.status,
                        "cancellable": keys.status not in mwl.FINISHED_STATUSES,
                    }
                )
        values.setdefault("form", {})
        return self.site.page(
            request,
            "worklist.html",
            status=status,
            title="Worklist",
            items=rows,
            can_schedule=may(request, Role.OPERATOR),
            **values,
        )

    @guarded
    async def items(self, request: Request) -> Response:
        done = request.query_params.get("done", "")
        notice = {"scheduled": "Scheduled.", "canceled": "Canceled."}.get(done, "")
        return await self._page(request, notice=notice)

    @guarded
    async def schedule(self, request: Request) -> Response:
        require(request, Role.OPERATOR)
        form = await form_of(request)
        try:
            dataset = item_of(form)
        except InvalidInput as exc:
            return await self._page(request, 422, form=form, error=f"Not scheduled: {exc}.")
        event = WorklistItemPut(item_id=uuid.uuid4().hex, dataset=dataset, source=SOURCE)
        await self.site.context.bus.publish(WORKLIST, event.key, event.to_bytes())
        await self.site.record(request, "api", f"worklist item {event.item_id} scheduled")
        return see_other("/worklist?done=scheduled")

    @guarded
    async def cancel(self, request: Request) -> Response:
        require(request, Role.OPERATOR)
        item_id = request.path_params["item"]
        await self._caught_up()
        item = await self.site.context.worklist.item(item_id)
        if item is None:
            raise NotFound("no such worklist item (already removed?)")
        if mwl.is_finished(item.dataset):
            raise Conflict(f"the step is {mwl.keys_of(item.dataset).status} already")
        event = WorklistItemStatus(item_id=item_id, status=mwl.CANCELED, source=SOURCE)
        await self.site.context.bus.publish(WORKLIST, event.key, event.to_bytes())
        await self.site.record(request, "api", f"worklist item {item_id} canceled")
        return see_other("/worklist?done=canceled")

    @guarded
    async def procedures(self, request: Request) -> Response:
        await self._caught_up()
        steps = []
        async for step in self.site.context.worklist.steps():
            data = step.dataset
            attributes = (data.get(mwl.SCHEDULED_STEP_ATTRIBUTES_SEQUENCE, {}).get("Value")) or [{}]
            first = attributes[0] if isinstance(attributes[0], dict) else {}
            steps.append(
                {
                    "start": _when(
                        first_text(data, PERFORMED_START_DATE),
                        first_text(data, PERFORMED_START_TIME),
                    ),
                    "patient_name": first_text(data, tags.PATIENT_NAME).replace("^", ", ", 1),
                    "patient_id": first_text(data, tags.PATIENT_ID),
                    "accession": first_text(first, tags.ACCESSION_NUMBER),
                    "modality": first_text(data, tags.MODALITY),
                    "station_ae": step.calling_ae,
                    "status": first_text(data, mwl.PERFORMED_STEP_STATUS),
                    "description": first_text(data, PERFORMED_DESCRIPTION),
                }
            )
        steps.reverse()  # newest change first
        return self.site.page(
            request, "procedures.html", title="Procedures", steps=steps[:MAX_SHOWN]
        )
