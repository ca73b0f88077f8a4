"""WADO-URI (PS3.18 9): one instance by query parameters, rendered or as application/dicom.

``image/jpeg`` is the default (9.1.2.1.1); ``image/png`` likewise rendered,
with windowCenter, windowWidth, rows, columns, imageQuality and frameNumber;
``application/dicom`` as stored, or in the ``transferSyntax`` asked for.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from micropacs.dicom import frames, render
from micropacs.dicomweb.responses import ROOT, error_response
from micropacs.errors import InvalidInput, MicropacsError, UnsupportedTransfer
from services.qr.retrieve_service import RetrieveService

DICOM = "application/dicom"


def render_params(query: QueryParams) -> dict[str, str]:
    """WADO-URI's rendering parameters in the terms of WADO-RS (PS3.18 9.1.2.1, 8.3.5.1)."""
    params: dict[str, str] = {}
    if "windowCenter" in query and "windowWidth" in query:
        params["window"] = f"{query['windowCenter']},{query['windowWidth']}"
    if "rows" in query or "columns" in query:
        side = query.get("columns") or query.get("rows")
        params["viewport"] = f"{query.get('columns', side)},{query.get('rows', side)}"
    if "imageQuality" in query:
        params["quality"] = query["imageQuality"]
    return params


class WadoUri:
    """The ``/wado`` route."""

    def __init__(self, retrieve: RetrieveService) -> None:
        self._retrieve = retrieve

    def routes(self) -> list[BaseRoute]:
        return [Route(f"{ROOT}/wado", self.wado, methods=["GET"])]

    async def wado(self, request: Request) -> Response:
        """One instance, rendered or as application/dicom."""
        query = request.query_params
        try:
            if query.get("requestType") != "WADO":
                raise InvalidInput("requestType must be WADO")
            for name in ("studyUID", "seriesUID", "objectUID"):
                if name not in query:
                    raise InvalidInput(f"{name} is missing")
            content = query.get("contentType", "image/jpeg").split(",")[0].split(";")[0].strip()
            if content not in (DICOM, *render.RENDERED_TYPES):
                raise UnsupportedTransfer(
                    f"contentType {content} is not served; use application/dicom, image/jpeg "
                    "or image/png"
                )
            location = await self._retrieve.one(
                query["studyUID"], query["seriesUID"], query["objectUID"]
            )
            if content != DICOM:
                options = render.parse_options(content, render_params(query))
                frame = frames.parse_numbers(query.get("frameNumber", "1"))[0]
                image = await self._retrieve.render(location, frame, options)
                return Response(image, media_type=content)
            wanted = query.get("transferSyntax", location.transfer_syntax_uid)
            _, chunks = await self._retrieve.instance(location, {wanted})
        except MicropacsError as exc:
            return error_response(exc)
        return StreamingResponse(chunks, media_type=DICOM)
