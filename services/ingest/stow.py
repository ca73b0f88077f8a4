"""STOW-RS (PS3.18 10.5): instances POSTed as multipart/related through the StoreService.

Each part is saved to disk as it arrives, then takes the same path as a
C-STORE, the StoreService's one call: validated (and, for a study's URL,
checked to belong to it), made durable, announced, and only then listed in
the ReferencedSOPSequence. A part that fails is listed in the
FailedSOPSequence with the DIMSE status a C-STORE would have got as its
FailureReason. A part a routing rule coerced is stored and referenced with
WarningReason 0xB000 (Coercion of Data Elements), and the answer is then
202 Accepted rather than 200 (PS3.18 10.5.3).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.dicom.json_model import DicomJson, element
from micropacs.dicom.tags import (
    FAILED_SOP_SEQUENCE,
    FAILURE_REASON,
    REFERENCED_SOP_CLASS_UID,
    REFERENCED_SOP_INSTANCE_UID,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    WARNING_REASON,
)
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicomweb import multipart
from micropacs.dicomweb.responses import DICOM_JSON, ROOT, error_response, problem, public_root
from micropacs.errors import MicropacsError, Status, StudyMismatch
from services.ingest.store_service import Received, StoreService

log = logging.getLogger(__name__)


def _reference(sop_class: str, sop_instance: str) -> DicomJson:
    """The Referenced SOP Class and Instance UIDs of an answer's item (PS3.18 10.5.3.2)."""
    return {
        REFERENCED_SOP_CLASS_UID: element("UI", sop_class),
        REFERENCED_SOP_INSTANCE_UID: element("UI", sop_instance),
    }


class Stow:
    """The ingest service's STOW-RS routes."""

    def __init__(
        self, store: StoreService, called_ae: str, limits: multipart.Limits | None = None
    ) -> None:
        self._store = store
        self._called_ae = called_ae
        self._limits = limits or multipart.Limits()

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
            parts = await multipart.split(
                request.stream(), params["boundary"], folder, self._limits
            )
        except MicropacsError as exc:
            return error_response(exc)
        referenced: list[DicomJson] = []
        failed: list[DicomJson] = []
        base = public_root(request)
        pending = list(parts)
        try:
            while pending:
                outcome, item = await self._store_part(pending.pop(0), study, base)
                (referenced if outcome else failed).append(item)
        finally:
            for part in pending:  # never handed to the StoreService, which owns the others
                part.path.unlink(missing_ok=True)
        answer: dict[str, Any] = {
            FAILED_SOP_SEQUENCE: element("SQ", *failed),
            REFERENCED_SOP_SEQUENCE: element("SQ", *referenced),
        }
        if study:
            answer[RETRIEVE_URL] = element("UR", f"{base}/studies/{study}")
        warned = any(WARNING_REASON in item for item in referenced)
        status = 200 if not failed and not warned else 202 if referenced else 409
        return Response(json.dumps(answer), status_code=status, media_type=DICOM_JSON)

    async def _store_part(
        self, part: multipart.Part, study: str | None, base: str
    ) -> tuple[bool, DicomJson]:
        media, _ = multipart.parameters(part.content_type or "application/dicom")
        if media != "application/dicom":
            part.path.unlink(missing_ok=True)
            return False, {FAILURE_REASON: element("US", Status.CANNOT_UNDERSTAND)}
        received = Received(
            path=part.path, calling_ae="DICOMWEB", called_ae=self._called_ae, sha256=part.sha256
        )
        try:
            stored = await self._store.accept(received, study=study)
        except StudyMismatch as exc:
            item = _reference(exc.sop_class_uid, exc.sop_instance_uid)
            return False, {**item, FAILURE_REASON: element("US", exc.dimse)}
        except MicropacsError as exc:
            return False, {FAILURE_REASON: element("US", exc.dimse)}
        event = stored.event
        item = _reference(event.sop_class_uid, event.sop_instance_uid)
        if stored.coerced:
            item[WARNING_REASON] = element("US", Status.COERCION_OF_DATA_ELEMENTS)
        url = (
            f"{base}/studies/{event.study_instance_uid}/series/{event.series_instance_uid}"
            f"/instances/{event.sop_instance_uid}"
        )
        item[RETRIEVE_URL] = element("UR", url)
        return True, item
