"""The router's HTTP routes: its queues, listed, retried and canceled (``/router/queues``).

``GET /router/queues`` lists every destination's queue (waiting and dead entries, the age
of the oldest waiting one, whether the destination is failing); ``GET
/router/queues/{destination}`` pages its entries (``state``, ``limit``, ``offset``);
``POST …/retry`` makes the given entries (``{"entries": [ids]}``, or every dead one) due
now, and ``POST …/cancel`` removes the given entries or every one of a ``state``
(``waiting``, ``dead`` or ``all``). The gate in front of every route lets viewers read and
operators retry and cancel. The admin's API and Routing page do the same through the
catalog's queue methods, without the router (docs/admin.md).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from micropacs.dicomweb.responses import error_response, problem
from micropacs.errors import MicropacsError
from micropacs.ports import Catalog, ForwardEntry, ForwardState
from services.router.sending import Dispatcher

QUEUES = "/router/queues"
QUEUE = QUEUES + "/{destination}"
MAX_PAGE = 1000
MAX_BODY = 1 << 20
MAX_IDS = 10_000


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def entry_json(entry: ForwardEntry) -> dict[str, Any]:
    """One entry as the routes answer it."""
    return {
        "id": entry.entry_id,
        "state": entry.state.value,
        "rule": entry.rule,
        "sop_class_uid": entry.sop_class_uid,
        "sop_instance_uid": entry.sop_instance_uid,
        "series_instance_uid": entry.series_instance_uid,
        "study_instance_uid": entry.study_instance_uid,
        "transfer_syntax": entry.target_syntax or "as stored",
        "size": entry.size,
        "enqueued_at": _time(entry.enqueued_at),
        "attempts": entry.attempts,
        "next_attempt_at": _time(entry.due_at) if entry.state is ForwardState.WAITING else None,
        "last_error": entry.last_error,
    }


class RouterApi:
    """The ``/router/queues`` routes over the catalog's queues and the running senders."""

    def __init__(self, catalog: Catalog, dispatcher: Dispatcher) -> None:
        self._catalog = catalog
        self._dispatcher = dispatcher

    def routes(self) -> list[BaseRoute]:
        """The routes, for the process's HTTP app."""
        return [
            Route(QUEUES, self.queues, methods=["GET"]),
            Route(QUEUE, self.entries, methods=["GET"]),
            Route(QUEUE + "/retry", self.retry, methods=["POST"]),
            Route(QUEUE + "/cancel", self.cancel, methods=["POST"]),
        ]

    async def queues(self, request: Request) -> Response:
        try:
            stats = await self._catalog.forward_queues()
        except MicropacsError as exc:
            return error_response(exc)
        now = time.time()
        answer = []
        for queue in stats:
            sender = self._dispatcher.sender(queue.destination)
            failing = sender.failing_since if sender is not None else 0.0
            oldest = queue.oldest_waiting
            answer.append(
                {
                    "destination": queue.destination,
                    "waiting": queue.waiting,
                    "dead": queue.dead,
                    "oldest_waiting_at": _time(oldest),
                    "oldest_waiting_seconds": round(now - oldest, 1) if oldest else 0,
                    "failing_since": _time(failing) if failing else None,
                }
            )
        return JSONResponse(answer)

    async def entries(self, request: Request) -> Response:
        params = request.query_params
        try:
            state = _state(params.get("state", ""), allow_all=True)
            limit = _number(params.get("limit", "100"), "limit")
            offset = _number(params.get("offset", "0"), "offset")
        except ValueError as exc:
            return problem(400, str(exc))
        limit = min(limit, MAX_PAGE)
        try:
            found = await self._catalog.forward_entries(
                request.path_params["destination"], state, limit, offset
            )
        except MicropacsError as exc:
            return error_response(exc)
        return JSONResponse([entry_json(entry) for entry in found])

    async def retry(self, request: Request) -> Response:
        destination = request.path_params["destination"]
        body = await _body(request)
        if isinstance(body, Response):
            return body
        ids = body.get("entries", [])
        if not _ids_ok(ids):
            return problem(400, f"entries must be a list of at most {MAX_IDS} entry ids")
        try:
            changed = await self._catalog.retry_forwards(destination, ids, time.time())
        except MicropacsError as exc:
            return error_response(exc)
        self._dispatcher.wake([destination], retry=True)
        return JSONResponse({"retried": changed})

    async def cancel(self, request: Request) -> Response:
        destination = request.path_params["destination"]
        body = await _body(request)
        if isinstance(body, Response):
            return body
        ids = body.get("entries", [])
        if not _ids_ok(ids):
            return problem(400, f"entries must be a list of at most {MAX_IDS} entry ids")
        given = body.get("state", "")
        if not ids and not given:
            return problem(400, 'name the entries to cancel, or a "state": waiting, dead or all')
        try:
            state = _state(str(given), allow_all=True) if given else None
        except ValueError as exc:
            return problem(400, str(exc))
        try:
            removed = await self._catalog.cancel_forwards(destination, ids, state)
        except MicropacsError as exc:
            return error_response(exc)
        return JSONResponse({"canceled": removed})


def _state(text: str, *, allow_all: bool) -> ForwardState | None:
    if text in ("", "all") and allow_all:
        return None
    try:
        return ForwardState(text)
    except ValueError:
        raise ValueError(f"state must be waiting, dead or all, not {text!r}") from None


def _number(text: str, name: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
    if number < 0:
        raise ValueError(f"{name} cannot be negative")
    return number


def _ids_ok(ids: object) -> bool:
    return (
        isinstance(ids, list)
        and len(ids) <= MAX_IDS
        and all(isinstance(i, str) and 0 < len(i) <= 64 for i in ids)
    )


async def _body(request: Request) -> dict[str, Any] | Response:
    """The JSON object of the request ({} when empty), or the refusal to answer."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            return problem(413, f"a body is at most {MAX_BODY} bytes")
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return problem(400, f"the body is not JSON: {exc}")
    if not isinstance(body, dict):
        return problem(400, "the body is a JSON object")
    return body
