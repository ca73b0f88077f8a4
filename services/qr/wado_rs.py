"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered images, thumbnails.

The routes translate: path and ``Accept`` in, a multipart/related, JSON or
image answer out. Which instances, in which syntax, and how they are
converted or rendered is the RetrieveService's (the same one C-GET and
C-MOVE use); the metadata is the QueryService's. Instances stream from the
BlobStore into the response.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from micropacs.dicom import frames, render
from micropacs.dicom.json_model import DicomJson, first_text
from micropacs.dicom.tags import (
    BITS_ALLOCATED,
    PIXEL_DATA,
    ROWS,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from micropacs.dicomweb import accept, multipart
from micropacs.dicomweb.responses import DICOM_JSON, ROOT, error_response, public_root
from micropacs.errors import InvalidInput, MicropacsError, NotFound
from micropacs.ports import InstanceLocation
from services.qr.query_service import QueryService
from services.qr.retrieve_service import PixelStream, RetrieveService, entity_identifier

log = logging.getLogger(__name__)

Part = tuple[str, str | None, AsyncIterator[bytes]]


def _entity(request: Request) -> tuple[str, str | None, str | None]:
    params = request.path_params
    return params["study"], params.get("series"), params.get("instance")


def _instance(request: Request) -> tuple[str, str, str]:
    params = request.path_params
    return params["study"], params["series"], params["instance"]


def with_bulk_data_uri(base: str, record: DicomJson) -> DicomJson:
    """An instance's metadata, pointing images to their pixel data (PS3.18 F.2.6)."""
    if ROWS in record:
        url = (
            f"{base}/studies/{first_text(record, STUDY_INSTANCE_UID)}"
            f"/series/{first_text(record, SERIES_INSTANCE_UID)}"
            f"/instances/{first_text(record, SOP_INSTANCE_UID)}/bulkdata/{PIXEL_DATA}"
        )
        bits = (record.get(BITS_ALLOCATED, {}).get("Value") or [16])[0]
        record[PIXEL_DATA] = {"vr": "OB" if bits == 8 else "OW", "BulkDataURI": url}
    return dict(sorted(record.items()))


def etag_of(body: bytes) -> str:
    """A strong validator of a response body (RFC 9110 8.8.3)."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class _Releasing(StreamingResponse):
    """A streamed response that closes its pixel stream once sent, or abandoned by a
    client that went away (Starlette runs no background task then)."""

    def __init__(self, stream: PixelStream, boundary: str, media_type: str) -> None:
        part_type = frames.media_type(stream.syntax)

        async def parts() -> AsyncIterator[Part]:
            async for chunks in stream.parts():
                yield f"{part_type}; transfer-syntax={stream.syntax}", None, chunks

        super().__init__(multipart.join(boundary, parts()), media_type=media_type)
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.aclose()


def pixel_parts(stream: PixelStream) -> Response:
    """Frames or pixel data as multipart/related, each part streamed from the file in
    chunks (PS3.18 8.7.3.3)."""
    part_type = frames.media_type(stream.syntax)
    boundary = multipart.new_boundary()
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return _Releasing(stream, boundary, media_type)


class WadoRs:
    """The retrieval routes."""

    def __init__(self, query: QueryService, retrieve: RetrieveService) -> None:
        self._query = query
        self._retrieve = retrieve

    def routes(self) -> list[BaseRoute]:
        study = f"{ROOT}/studies/{{study}}"
        series = f"{study}/series/{{series}}"
        instance = f"{series}/instances/{{instance}}"
        return [
            *(Route(path, self.instances, methods=["GET"]) for path in (study, series, instance)),
            *(
                Route(f"{path}/metadata", self.metadata, methods=["GET"])
                for path in (study, series, instance)
            ),
            Route(f"{instance}/frames/{{frames}}", self.frames, methods=["GET"]),
            Route(f"{instance}/bulkdata/{{tag}}", self.bulk_data, methods=["GET"]),
            Route(f"{instance}/rendered", self.rendered, methods=["GET"]),
            Route(f"{instance}/frames/{{frames}}/rendered", self.rendered, methods=["GET"]),
            *(
                Route(f"{path}/thumbnail", self.thumbnail, methods=["GET"])
                for path in (study, series, instance)
            ),
        ]

    async def instances(self, request: Request) -> Response:
        """A study, series or instance as multipart/related application/dicom (10.4.1.1.1)."""
        try:
            accepted = accept.instance_syntaxes(request.headers.get("accept", ""))
            found = await self._retrieve.entity(*_entity(request))
            self._retrieve.servable(found, accepted)
        except MicropacsError as exc:
            return error_response(exc)
        boundary = multipart.new_boundary()
        return StreamingResponse(
            multipart.join(boundary, self._parts(found, accepted)),
            media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        )

    async def _parts(
        self, found: list[InstanceLocation], accepted: set[str]
    ) -> AsyncIterator[Part]:
        for location in found:
            try:
                syntax, chunks = await self._retrieve.instance(location, accepted)
            except MicropacsError as exc:
                # The response has started: leave this instance out and say why.
                log.warning("WADO-RS instance left out", extra={"reason": str(exc)})
                continue
            yield f"application/dicom; transfer-syntax={syntax}", None, chunks

    async def metadata(self, request: Request) -> Response:
        """Every attribute of the instances as DICOM JSON, with an ETag (10.4.1.1.2)."""
        try:
            records = await self._query.metadata(entity_identifier(*_entity(request)))
        except MicropacsError as exc:
            return error_response(exc)
        base = public_root(request)
        body = json.dumps([with_bulk_data_uri(base, record) for record in records]).encode()
        etag = etag_of(body)
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type=DICOM_JSON, headers={"ETag": etag})

    async def bulk_data(self, request: Request) -> Response:
        """The pixel data of an instance (the bulk data its metadata points to)."""
        try:
            if request.path_params["tag"].upper() != PIXEL_DATA:
                raise NotFound(f"only pixel data ({PIXEL_DATA}) is served as bulk data")
            accepted = accept.frame_syntaxes(request.headers.get("accept", ""))
            location = await self._retrieve.one(*_instance(request))
            stream = await self._retrieve.frames(location, None, accepted)
        except MicropacsError as exc:
            return error_response(exc)
        return pixel_parts(stream)

    async def frames(self, request: Request) -> Response:
        """Frames of an instance, as stored or decoded (10.4.1.1.3)."""
        try:
            numbers = frames.parse_numbers(request.path_params["frames"])
            accepted = accept.frame_syntaxes(request.headers.get("accept", ""))
            location = await self._retrieve.one(*_instance(request))
            stream = await self._retrieve.frames(location, numbers, accepted)
        except MicropacsError as exc:
            return error_response(exc)
        return pixel_parts(stream)

    async def rendered(self, request: Request) -> Response:
        """An instance or one of its frames rendered (10.4.1.1.4)."""
        return await self._render(request, thumbnail=False)

    async def thumbnail(self, request: Request) -> Response:
        """A small rendered image of a study, series or instance (10.4.1.1.5)."""
        return await self._render(request, thumbnail=True)

    async def _render(self, request: Request, *, thumbnail: bool) -> Response:
        try:
            media = accept.rendered_type(request.headers.get("accept", ""))
            params = dict(request.query_params)
            if thumbnail:
                params.setdefault("viewport", f"{render.THUMBNAIL_SIZE},{render.THUMBNAIL_SIZE}")
            options = render.parse_options(media, params)
            frame = frames.parse_numbers(request.path_params.get("frames", "1"))
            if len(frame) != 1:
                raise InvalidInput("render one frame at a time")
            found = await self._retrieve.entity(*_entity(request))
            middle = found[len(found) // 2]  # a series or study shows its middle image
            image = await self._retrieve.render(middle, frame[0], options)
        except MicropacsError as exc:
            return error_response(exc)
        return Response(image, media_type=media)
