"""QIDO-RS (PS3.18 10.6): studies, series and instances searched through the QueryService.

The same QueryService answers C-FIND, so both give the same matches. The
route parses the request, adds each match's RetrieveURL and says 204 when
nothing matched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from micropacs.dicom.json_model import DicomJson, element, first_text
from micropacs.dicom.levels import Level
from micropacs.dicom.tags import (
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_URL,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from micropacs.dicom.uids import require_uid
from micropacs.dicomweb import qido
from micropacs.dicomweb.responses import DICOM_JSON, ROOT, error_response, public_root
from micropacs.errors import MicropacsError
from services.qr.query_service import QueryService

PATH_KEYS = (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"))
"""Path parameters of a search and the attribute each fixes (PS3.18 10.6.1)."""


def retrieve_url(base: str, level: Level, match: DicomJson) -> str:
    """Where a match can be retrieved with WADO-RS (PS3.18 10.6.3.3.1)."""
    url = f"{base}/studies/{first_text(match, STUDY_INSTANCE_UID)}"
    if level is not Level.STUDY:
        url += f"/series/{first_text(match, SERIES_INSTANCE_UID)}"
    if level is Level.IMAGE:
        url += f"/instances/{first_text(match, SOP_INSTANCE_UID)}"
    return url


class QidoRs:
    """The search routes."""

    def __init__(self, query: QueryService) -> None:
        self._query = query

    def routes(self) -> list[BaseRoute]:
        study = f"{ROOT}/studies/{{study}}"
        series = f"{study}/series/{{series}}"
        return [
            Route(f"{ROOT}/studies", self.search(Level.STUDY), methods=["GET"]),
            Route(f"{ROOT}/series", self.search(Level.SERIES), methods=["GET"]),
            Route(f"{study}/series", self.search(Level.SERIES), methods=["GET"]),
            Route(f"{ROOT}/instances", self.search(Level.IMAGE), methods=["GET"]),
            Route(f"{study}/instances", self.search(Level.IMAGE), methods=["GET"]),
            Route(f"{series}/instances", self.search(Level.IMAGE), methods=["GET"]),
        ]

    def search(self, level: Level) -> Callable[[Request], Awaitable[Response]]:
        """The endpoint searching at ``level``."""

        async def endpoint(request: Request) -> Response:
            try:
                fixed = {
                    keyword: require_uid(request.path_params[name], keyword)
                    for name, keyword in PATH_KEYS
                    if name in request.path_params
                }
                parsed = qido.parse(level, request.query_params.multi_items(), fixed)
                found = await self._query.find(
                    parsed.identifier,
                    limit=parsed.limit,
                    offset=parsed.offset,
                    include_all=parsed.include_all,
                )
            except MicropacsError as exc:
                return error_response(exc)
            base = public_root(request)
            answers = [_answer(level, base, match) for match in found]
            headers = {"Warning": ", ".join(parsed.warnings)} if parsed.warnings else {}
            if not answers:
                return Response(status_code=204, headers=headers)
            return Response(json.dumps(answers), media_type=DICOM_JSON, headers=headers)

        return endpoint


def _answer(level: Level, base: str, match: DicomJson) -> DicomJson:
    answer = {tag: value for tag, value in match.items() if tag != QUERY_RETRIEVE_LEVEL}
    answer[RETRIEVE_URL] = element("UR", retrieve_url(base, level, match))
    return dict(sorted(answer.items()))
