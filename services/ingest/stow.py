"""STOW-RS (PS3.18 10.5): instances POSTed as multipart/related through the StoreService.

Each part is saved to disk as it arrives, then takes the same path as a
C-STORE: validated, made durable, announced, and only then listed in the
ReferencedSOPSequence. A part that fails is listed in the FailedSOPSequence
with the DIMSE status a C-STORE would have got as its FailureReason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicomweb import multipart
from micropacs.dicomweb.responses import DICOM_JSON, RETRIEVE_URL, ROOT, problem
from micropacs.errors import MicropacsError, dimse_status
from services.ingest.store_service import Received, StoreService

log = logging.getLogger(__name__)

STUDY_MISMATCH = 0xC409
"""FailureReason of an instance POSTed to another study's URL (a "cannot understand" code)."""
NOT_DICOM_PART = 0xC000

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS = "00081150"
REFERENCED_SOP_INSTANCE = "00081155"
FAILURE_REASON = "00081197"


def _reference(sop_class: str, sop_instance: str) -> DicomJson:
    item: DicomJson = {}
    if sop_class:
        item[REFERENCED_SOP_CLASS] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item[REFERENCED_SOP_INSTANCE] = {"vr": "UI", "Value": [sop_instance]}
    return item


class Stow:
    """The ingest service's STOW-RS routes."""

    def __init__(self, store: StoreService, called_ae: str) -> None:
        self._store = store
        self._called_ae = called_ae

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{ROOT}/studies", self.store, methods=["POST"]),
            Route(f"{ROOT}/studies/{{study}}", self.store, methods=["POST"]),
        ]

    async def store(self, request: Request) -> Response:
        study = request.path_params.get("study")
        if study is not None and not is_valid_uid(study):
            return problem(400, f"StudyInstanceUID {study!r} in the URL is not a valid UID")
        media, params = multipart.parameters(request.headers.get("content-type", ""))
        part_type = params.get("type", "").lower()
        if media != "multipart/related" or part_type not in ("application/dicom", ""):
            return problem(
                415,
                'send multipart/related; type="application/dicom" (instances as Part 10 files)',
            )
        if "boundary" not in params:
            return problem(400, "the Content-Type has no boundary")
        folder = Path(tempfile.gettempdir())
        try:
            parts = await multipart.split(request.stream(), params["boundary"], folder)
        except MicropacsError as exc:
            return problem(400, f"malformed multipart body: {exc}")
        referenced: list[DicomJson] = []
        failed: list[DicomJson] = []
        base = str(request.base_url).rstrip("/") + ROOT
        try:
            for part in parts:
                outcome, item = await self._store_part(part, study, base)
                (referenced if outcome else failed).append(item)
        finally:
            for part in parts:
                part.path.unlink(missing_ok=True)
        answer: dict[str, Any] = {
            FAILED_SOP_SEQUENCE: {"vr": "SQ", "Value": failed} if failed else {"vr": "SQ"},
            REFERENCED_SOP_SEQUENCE: (
                {"vr": "SQ", "Value": referenced} if referenced else {"vr": "SQ"}
            ),
        }
        if study:
            answer[RETRIEVE_URL] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
        status = 200 if not failed else 202 if referenced else 409
        return Response(json.dumps(answer), status_code=status, media_type=DICOM_JSON)

    async def _store_part(
        self, part: multipart.Part, study: str | None, base: str
    ) -> tuple[bool, DicomJson]:
        media, _ = multipart.parameters(part.content_type or "application/dicom")
        if media != "application/dicom":
            item = {FAILURE_REASON: {"vr": "US", "Value": [NOT_DICOM_PART]}}
            return False, item
        received = Received(path=part.path, calling_ae="DICOMWEB", called_ae=self._called_ae)
        try:
            prepared = await asyncio.to_thread(self._store.prepare, received)
        except MicropacsError as exc:
            return False, {FAILURE_REASON: {"vr": "US", "Value": [dimse_status(exc)]}}
        event = prepared.event
        item = _reference(event.sop_class_uid, event.sop_instance_uid)
        if study is not None and event.study_instance_uid != study:
            log.warning(
                "STOW-RS instance of another study refused",
                extra={"url_study": study, "instance_study": event.study_instance_uid},
            )
            item[FAILURE_REASON] = {"vr": "US", "Value": [STUDY_MISMATCH]}
            return False, item
        try:
            await self._store.commit(prepared)
        except MicropacsError as exc:
            item[FAILURE_REASON] = {"vr": "US", "Value": [dimse_status(exc)]}
            return False, item
        url = (
            f"{base}/studies/{event.study_instance_uid}/series/{event.series_instance_uid}"
            f"/instances/{event.sop_instance_uid}"
        )
        item[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        return True, item
