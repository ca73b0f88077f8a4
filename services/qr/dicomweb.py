"""DICOMweb of the qr service: QIDO-RS, WADO-RS and WADO-URI (PS3.18 10.4, 10.6, 9).

Every route goes through the same QueryService and RetrieveService as C-FIND,
C-GET and C-MOVE, so both paths give the same answers. Instances stream from
the BlobStore into the multipart/related response; metadata comes from the
catalog without reading a single object.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydicom.filebase import DicomBytesIO
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from micropacs.dicom import frames, render
from micropacs.dicom.json_model import DicomJson
from micropacs.dicom.transcode import ENCODABLE, UNCOMPRESSED, to_syntax
from micropacs.dicom.uids import is_valid_uid
from micropacs.dicomweb import multipart, qido
from micropacs.dicomweb.responses import (
    DICOM_JSON,
    RETRIEVE_URL,
    ROOT,
    error_response,
    problem,
)
from micropacs.errors import (
    InvalidInput,
    MicropacsError,
    NotFound,
    UnsupportedTransfer,
)
from micropacs.ports import InstanceLocation, Level
from services.qr.query_service import QueryService
from services.qr.retrieve_service import RetrieveService

log = logging.getLogger(__name__)

ANY_SYNTAX = "*"
PIXEL_DATA = "7FE00010"
PATH_UIDS = (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"))


def _uid(text: str, what: str) -> str:
    if not is_valid_uid(text):
        raise InvalidInput(f"{what} {text!r} is not a valid UID")
    return text


def _accepted_syntaxes(accept: str) -> set[str]:
    """Transfer syntaxes an Accept header allows for application/dicom parts (PS3.18 8.7.3)."""
    found: set[str] = set()
    for item in accept.split(","):
        media, params = multipart.parameters(item)
        part_type = params.get("type", "application/dicom").lower()
        if media in ("*/*", "multipart/related", "application/dicom", "multipart/*") and (
            part_type == "application/dicom" or media == "application/dicom"
        ):
            found.add(params.get("transfer-syntax", ExplicitVRLittleEndian))
    if not found and accept.strip():
        raise UnsupportedTransfer(f"cannot answer with {accept!r}")
    return found or {ExplicitVRLittleEndian}


def _frame_syntaxes(accept: str) -> set[str]:
    """Transfer syntaxes an Accept header allows for frames (PS3.18 8.7.3.3.2)."""
    found: set[str] = set()
    for item in accept.split(","):
        media, params = multipart.parameters(item)
        if media not in ("multipart/related", "*/*", "multipart/*"):
            continue
        part_type = params.get("type", frames.OCTET_STREAM).lower()
        syntax = params.get("transfer-syntax")
        if syntax:
            found.add(syntax)
        elif part_type == frames.OCTET_STREAM or media == "*/*":
            found.add(ExplicitVRLittleEndian)
        else:
            found.update(u for u in frames.MEDIA_TYPES if frames.MEDIA_TYPES[u] == part_type)
    if not found and accept.strip() and "*/*" not in accept:
        raise UnsupportedTransfer(f"frames cannot be sent as {accept!r}")
    return found or {ExplicitVRLittleEndian}


def _rendered_type(accept: str) -> str:
    for item in accept.split(","):
        media, _ = multipart.parameters(item)
        if media in render.RENDERED_TYPES:
            return media
        if media in ("*/*", "image/*", ""):
            return "image/jpeg"
    raise UnsupportedTransfer(f"rendered images are image/jpeg or image/png, not {accept!r}")


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


def _with_bulk_data_uri(base: str, record: DicomJson) -> DicomJson:
    """An instance's metadata, pointing images to their pixel data (PS3.18 F.2.6)."""
    if "00280010" in record:
        study, series, instance = (
            (record.get(tag, {}).get("Value") or [""])[0]
            for tag in ("0020000D", "0020000E", "00080018")
        )
        bits = (record.get("00280100", {}).get("Value") or [16])[0]
        record[PIXEL_DATA] = {
            "vr": "OB" if bits == 8 else "OW",
            "BulkDataURI": f"{base}/studies/{study}/series/{series}/instances/{instance}"
            f"/bulkdata/{PIXEL_DATA}",
        }
    return dict(sorted(record.items()))


def _pixel_parts(syntax: str, payloads: list[bytes]) -> Response:
    """Frames or pixel data as multipart/related, one part per payload (PS3.18 8.7.3.3)."""
    part_type = frames.media_type(syntax)
    boundary = multipart.new_boundary()

    async def parts() -> AsyncIterator[tuple[str, str | None, AsyncIterator[bytes]]]:
        for payload in payloads:
            yield f"{part_type}; transfer-syntax={syntax}", None, _once(payload)

    return StreamingResponse(
        multipart.join(boundary, parts()),
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
    )


def _target(stored: str, accepted: set[str]) -> str | None:
    """The syntax to send an instance stored as ``stored`` in, or None if none can be."""
    if ANY_SYNTAX in accepted or stored in accepted:
        return stored
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, *sorted(ENCODABLE)):
        if syntax in accepted:
            return str(syntax)
    return None


class DicomWeb:
    """The qr service's DICOMweb routes."""

    def __init__(self, query: QueryService, retrieve: RetrieveService) -> None:
        self._query = query
        self._retrieve = retrieve

    def routes(self) -> list[BaseRoute]:
        studies = f"{ROOT}/studies"
        study = f"{studies}/{{study}}"
        series = f"{study}/series/{{series}}"
        instance = f"{series}/instances/{{instance}}"
        return [
            Route(studies, self.search(Level.STUDY), methods=["GET"]),
            Route(f"{ROOT}/series", self.search(Level.SERIES), methods=["GET"]),
            Route(f"{study}/series", self.search(Level.SERIES), methods=["GET"]),
            Route(f"{ROOT}/instances", self.search(Level.IMAGE), methods=["GET"]),
            Route(f"{study}/instances", self.search(Level.IMAGE), methods=["GET"]),
            Route(f"{series}/instances", self.search(Level.IMAGE), methods=["GET"]),
            Route(study, self.retrieve_instances, methods=["GET"]),
            Route(series, self.retrieve_instances, methods=["GET"]),
            Route(instance, self.retrieve_instances, methods=["GET"]),
            Route(f"{study}/metadata", self.metadata, methods=["GET"]),
            Route(f"{series}/metadata", self.metadata, methods=["GET"]),
            Route(f"{instance}/metadata", self.metadata, methods=["GET"]),
            Route(f"{instance}/frames/{{frames}}", self.frames, methods=["GET"]),
            Route(f"{instance}/bulkdata/{{tag}}", self.bulk_data, methods=["GET"]),
            Route(f"{instance}/rendered", self.rendered, methods=["GET"]),
            Route(f"{instance}/frames/{{frames}}/rendered", self.rendered, methods=["GET"]),
            Route(f"{study}/thumbnail", self.thumbnail, methods=["GET"]),
            Route(f"{series}/thumbnail", self.thumbnail, methods=["GET"]),
            Route(f"{instance}/thumbnail", self.thumbnail, methods=["GET"]),
            Route(f"{ROOT}/wado", self.wado_uri, methods=["GET"]),
        ]

    # -- QIDO-RS ------------------------------------------------------------------------------

    def search(self, level: Level) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                fixed = {
                    keyword: _uid(request.path_params[name], keyword)
                    for name, keyword in (
                        ("study", "StudyInstanceUID"),
                        ("series", "SeriesInstanceUID"),
                    )
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
            base = str(request.base_url).rstrip("/") + ROOT
            answers = [self._qido_answer(level, base, match) for match in found]
            headers = {"Warning": ", ".join(parsed.warnings)} if parsed.warnings else {}
            if not answers:
                return Response(status_code=204, headers=headers)
            return Response(json.dumps(answers), media_type=DICOM_JSON, headers=headers)

        return endpoint

    @staticmethod
    def _qido_answer(level: Level, base: str, match: DicomJson) -> DicomJson:
        answer = {tag: element for tag, element in match.items() if tag != "00080052"}
        study = (match.get("0020000D", {}).get("Value") or [""])[0]
        url = f"{base}/studies/{study}"
        if level is not Level.STUDY:
            url += f"/series/{(match.get('0020000E', {}).get('Value') or [''])[0]}"
        if level is Level.IMAGE:
            url += f"/instances/{(match.get('00080018', {}).get('Value') or [''])[0]}"
        answer[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        return dict(sorted(answer.items()))

    # -- WADO-RS ------------------------------------------------------------------------------

    async def _locate(self, request: Request) -> list[InstanceLocation]:
        params = request.path_params
        identifier: DicomJson = {
            "0020000D": {"vr": "UI", "Value": [_uid(params["study"], "StudyInstanceUID")]}
        }
        level = Level.STUDY
        if "series" in params:
            identifier["0020000E"] = {
                "vr": "UI",
                "Value": [_uid(params["series"], "SeriesInstanceUID")],
            }
            level = Level.SERIES
        if "instance" in params:
            identifier["00080018"] = {
                "vr": "UI",
                "Value": [_uid(params["instance"], "SOPInstanceUID")],
            }
            level = Level.IMAGE
        identifier["00080052"] = {"vr": "CS", "Value": [level.value]}
        found = await self._retrieve.locate(identifier)
        if not found:
            raise NotFound(f"no instances at {request.url.path}")
        return found

    async def retrieve_instances(self, request: Request) -> Response:
        try:
            accepted = _accepted_syntaxes(request.headers.get("accept", ""))
            found = await self._locate(request)
        except MicropacsError as exc:
            return error_response(exc)
        unservable = [
            location.transfer_syntax_uid
            for location in found
            if _target(location.transfer_syntax_uid, accepted) is None
        ]
        if unservable:
            reason = (
                f"stored as {sorted(set(unservable))}, which cannot be converted to "
                f"{sorted(accepted)}; accept transfer-syntax=* or {ExplicitVRLittleEndian}"
            )
            return problem(406, reason)
        boundary = multipart.new_boundary()
        body = multipart.join(boundary, self._parts(found, accepted))
        return StreamingResponse(
            body,
            media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        )

    async def _parts(
        self, found: list[InstanceLocation], accepted: set[str]
    ) -> AsyncIterator[tuple[str, str | None, AsyncIterator[bytes]]]:
        for location in found:
            syntax = location.transfer_syntax_uid
            target = _target(syntax, accepted)
            if target == syntax:
                chunks = self._retrieve.read(location)
            else:
                assert target is not None  # refused before the response started
                try:
                    chunks = _once(await self._transcoded(location, UID(target)))
                except MicropacsError as exc:
                    # The response has started: leave this instance out and say why.
                    log.warning(
                        "WADO-RS instance left out",
                        extra={"sop_instance_uid": location.sop_instance_uid, "reason": str(exc)},
                    )
                    continue
            yield f"application/dicom; transfer-syntax={target}", None, chunks

    async def _transcoded(self, location: InstanceLocation, target: UID) -> bytes:
        async with self._retrieve.local_path(location) as path:
            converted = await asyncio.to_thread(to_syntax, path, target)
            buffer = DicomBytesIO()
            await asyncio.to_thread(converted.save_as, buffer, enforce_file_format=True)
        return buffer.getvalue()

    async def metadata(self, request: Request) -> Response:
        try:
            found = await self._locate(request)
            uids = {location.sop_instance_uid for location in found}
            identifier: DicomJson = {
                "0020000D": {"vr": "UI", "Value": [found[0].study_instance_uid]},
                "00080052": {"vr": "CS", "Value": ["IMAGE"]},
            }
            if "series" in request.path_params:
                identifier["0020000E"] = {"vr": "UI", "Value": [found[0].series_instance_uid]}
            records = await self._query.find(identifier, include_all=True)
        except MicropacsError as exc:
            return error_response(exc)
        base = str(request.base_url).rstrip("/") + ROOT
        body = json.dumps(
            [
                _with_bulk_data_uri(base, {t: e for t, e in r.items() if t != "00080052"})
                for r in records
                if (r.get("00080018", {}).get("Value") or [""])[0] in uids
            ]
        ).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type=DICOM_JSON, headers={"ETag": etag})

    async def bulk_data(self, request: Request) -> Response:
        """The pixel data of an instance (the bulk data its metadata points to)."""
        try:
            if request.path_params["tag"].upper() != PIXEL_DATA:
                raise NotFound("only pixel data (7FE00010) is served as bulk data")
            accepted = _frame_syntaxes(request.headers.get("accept", ""))
            (location,) = await self._locate(request)
            async with self._retrieve.local_path(location) as path:
                syntax, payloads = await asyncio.to_thread(frames.read_frames, path, None, accepted)
        except MicropacsError as exc:
            return error_response(exc)
        if syntax in UNCOMPRESSED:
            payloads = [b"".join(payloads)]
        return _pixel_parts(syntax, payloads)

    # -- frames, rendered, thumbnails ---------------------------------------------------------

    async def frames(self, request: Request) -> Response:
        try:
            numbers = frames.parse_numbers(request.path_params["frames"])
            accepted = _frame_syntaxes(request.headers.get("accept", ""))
            (location,) = await self._locate(request)
            async with self._retrieve.local_path(location) as path:
                syntax, payloads = await asyncio.to_thread(
                    frames.read_frames, path, numbers, accepted
                )
        except MicropacsError as exc:
            return error_response(exc)
        return _pixel_parts(syntax, payloads)

    async def rendered(self, request: Request) -> Response:
        return await self._render(request, thumbnail=False)

    async def thumbnail(self, request: Request) -> Response:
        return await self._render(request, thumbnail=True)

    async def _render(self, request: Request, *, thumbnail: bool) -> Response:
        try:
            media = _rendered_type(request.headers.get("accept", ""))
            params = dict(request.query_params)
            if thumbnail:
                params.setdefault("viewport", f"{render.THUMBNAIL_SIZE},{render.THUMBNAIL_SIZE}")
            options = render.parse_options(media, params)
            frame = frames.parse_numbers(request.path_params.get("frames", "1"))
            if len(frame) != 1:
                raise InvalidInput("render one frame at a time")
            found = await self._locate(request)
            location = found[len(found) // 2]  # a series or study shows its middle image
            async with self._retrieve.local_path(location) as path:
                image = await asyncio.to_thread(render.render, path, frame[0], options)
        except MicropacsError as exc:
            return error_response(exc)
        return Response(image, media_type=media)

    # -- WADO-URI -----------------------------------------------------------------------------

    async def wado_uri(self, request: Request) -> Response:
        """PS3.18 9: one instance as application/dicom, or rendered as image/jpeg (the
        default) or image/png with windowCenter, windowWidth, rows, columns, frameNumber."""
        query = request.query_params
        try:
            if query.get("requestType") != "WADO":
                raise InvalidInput("requestType must be WADO")
            for name in ("studyUID", "seriesUID", "objectUID"):
                if name not in query:
                    raise InvalidInput(f"{name} is missing")
            content = query.get("contentType", "image/jpeg").split(",")[0].split(";")[0].strip()
            if content not in ("application/dicom", *render.RENDERED_TYPES):
                raise UnsupportedTransfer(
                    f"contentType {content} is not served; use application/dicom, image/jpeg "
                    "or image/png"
                )
            request.path_params.update(
                study=query["studyUID"], series=query["seriesUID"], instance=query["objectUID"]
            )
            (location,) = await self._locate(request)
            if content != "application/dicom":
                return await self._render_uri(location, content, query)
            syntax = query.get("transferSyntax", location.transfer_syntax_uid)
            if syntax == location.transfer_syntax_uid:
                return StreamingResponse(
                    self._retrieve.read(location), media_type="application/dicom"
                )
            converted = await self._transcoded(location, UID(syntax))
        except MicropacsError as exc:
            return error_response(exc)
        return Response(converted, media_type="application/dicom")

    async def _render_uri(self, location: InstanceLocation, media: str, query: Any) -> Response:
        params: dict[str, str] = {}
        if "windowCenter" in query and "windowWidth" in query:
            params["window"] = f"{query['windowCenter']},{query['windowWidth']}"
        if "rows" in query or "columns" in query:
            side = query.get("columns") or query.get("rows")
            params["viewport"] = f"{query.get('columns', side)},{query.get('rows', side)}"
        if "imageQuality" in query:
            params["quality"] = query["imageQuality"]
        options = render.parse_options(media, params)
        frame = frames.parse_numbers(query.get("frameNumber", "1"))[0]
        async with self._retrieve.local_path(location) as path:
            image = await asyncio.to_thread(render.render, path, frame, options)
        return Response(image, media_type=media)
