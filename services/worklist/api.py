"""The worklist API: scheduling without a RIS (``/api/worklist/items``).

``POST`` takes one item in the DICOM JSON model (PS3.18 F.2), checked by
:func:`~services.worklist.scheduling.checked_item`, and answers 201 with its
``Location`` once its event is durable on the bus; ``GET`` lists items by
QIDO-RS-style filters or shows one; ``DELETE`` removes one (204). Items
published are applied by the index: a listing shows them once it has. The
gate in front of every route lets viewers read and operators write.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from micropacs.dicomweb.responses import ROOT, error_response, problem, public_root
from micropacs.errors import MicropacsError
from services.worklist.scheduling import Scheduler, as_json, parse_filters

ITEMS = "/api/worklist/items"
ITEM = ITEMS + "/{id}"
MAX_ID_LENGTH = 256


def item_url(request: Request, item_id: str) -> str:
    """Where an item is, from the configured public URL (never the Host header)."""
    return f"{public_root(request).removesuffix(ROOT)}{ITEMS}/{quote(item_id, safe='')}"


class WorklistApi:
    """The ``/api/worklist/items`` routes over a :class:`Scheduler`."""

    def __init__(self, scheduler: Scheduler, max_item_bytes: int) -> None:
        self._scheduler = scheduler
        self._max_item_bytes = max_item_bytes

    def routes(self) -> list[BaseRoute]:
        return [
            Route(ITEMS, self.add, methods=["POST"]),
            Route(ITEMS, self.find, methods=["GET"]),
            Route(ITEM, self.show, methods=["GET"]),
            Route(ITEM, self.remove, methods=["DELETE"]),
        ]

    async def add(self, request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in ("application/json", "application/dicom+json"):
            return problem(415, "send one item as application/dicom+json or application/json")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._max_item_bytes:
                return problem(
                    413,
                    f"an item is at most {self._max_item_bytes} bytes"
                    " (MICROPACS_WORKLIST__API_MAX_ITEM_BYTES)",
                )
        try:
            data: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return problem(400, f"the body is not JSON: {exc}")
        if isinstance(data, list) and len(data) == 1:
            data = data[0]  # PS3.18 F.2 models a response as an array of data sets
        try:
            item = await self._scheduler.add(data)
        except MicropacsError as exc:
            return error_response(exc)
        return JSONResponse(
            as_json(item), status_code=201, headers={"Location": item_url(request, item.item_id)}
        )

    async def find(self, request: Request) -> Response:
        try:
            filters = parse_filters(request.query_params.multi_items())
            found = await self._scheduler.find(filters)
        except MicropacsError as exc:
            return error_response(exc)
        return JSONResponse([as_json(item) for item in found])

    async def show(self, request: Request) -> Response:
        item_id = str(request.path_params["id"])
        if len(item_id) > MAX_ID_LENGTH:
            return problem(404, "no such worklist item")
        try:
            item = await self._scheduler.item(item_id)
        except MicropacsError as exc:
            return error_response(exc)
        if item is None:
            return problem(404, "no such worklist item")
        return JSONResponse(as_json(item))

    async def remove(self, request: Request) -> Response:
        item_id = str(request.path_params["id"])
        if len(item_id) > MAX_ID_LENGTH:
            return problem(404, "no such worklist item")
        try:
            removed = await self._scheduler.remove(item_id)
        except MicropacsError as exc:
            return error_response(exc)
        if not removed:
            return problem(404, "no such worklist item")
        return Response(status_code=204)
