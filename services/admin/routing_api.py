"""``/api/routing``: the router's queues (viewers list them, operators retry and cancel
entries) and its rules, read-only (:mod:`services.admin.routing` says why).

``POST …/retry`` with ``{"entries": [ids]}`` makes those entries due now; without entries,
every dead entry of the destination. ``POST …/cancel`` removes the named entries, or every
entry of a ``state`` (``waiting``, ``dead`` or ``all``): it needs one or the other, so an
empty body never empties a queue. Each retry and cancel is recorded in the audit trail.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from micropacs.auth.principal import Principal
from micropacs.ports import ForwardState
from services.admin import routing
from services.admin.access import OPERATOR, VIEWER, audit, context_of

Destination = Annotated[
    str, Path(min_length=1, max_length=64, description="The destination's AE title")
]
EntryId = Annotated[str, Field(min_length=1, max_length=64)]


class RetryBody(BaseModel):
    """Which entries to retry (none named: every dead one)."""

    model_config = ConfigDict(extra="forbid")

    entries: list[EntryId] = Field(default_factory=list, max_length=routing.MAX_IDS)


class CancelBody(RetryBody):
    """Which entries to cancel: the named ones, or every one of a state."""

    state: Literal["waiting", "dead", "all"] | None = Field(
        None, description="Without entries: cancel every entry of this state."
    )


def router() -> APIRouter:
    """The routing routes."""
    routes = APIRouter(prefix="/routing", tags=["routing"])

    @routes.get("/queues")
    async def list_queues(
        request: Request, _: Annotated[Principal, Depends(VIEWER)]
    ) -> list[dict[str, Any]]:
        """Every destination's queue: waiting and dead entries, the oldest waiting entry's
        age, and the router's sent, failed and dead-lettered counts (null when the router
        runs in another process: see the dashboard)."""
        context = context_of(request)
        named = routing.destinations(routing.rules(context.settings))
        found = await routing.queues(context.catalog, context.registry, named)
        return [asdict(queue) for queue in found]

    @routes.get("/queues/{destination}")
    async def list_entries(
        request: Request,
        destination: Destination,
        _: Annotated[Principal, Depends(VIEWER)],
        state: Annotated[Literal["waiting", "dead", "all"], Query()] = "all",
        limit: Annotated[int, Query(ge=1, le=routing.MAX_PAGE)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """A page of the destination's entries, oldest enqueued first."""
        found = await context_of(request).catalog.forward_entries(
            destination, routing.state_of(state), limit, offset
        )
        return [routing.entry_view(entry) for entry in found]

    @routes.post("/queues/{destination}/retry")
    async def retry(
        request: Request,
        destination: Destination,
        who: Annotated[Principal, Depends(OPERATOR)],
        body: RetryBody | None = None,
    ) -> dict[str, int]:
        """Make the named entries (or every dead one) due now, their attempts counted
        afresh."""
        ids = body.entries if body else []
        changed = await context_of(request).catalog.retry_forwards(destination, ids, time.time())
        await audit(
            request,
            who,
            "api",
            routing.retried_detail(destination, ids, changed),
            destination=destination,
        )
        return {"retried": changed}

    @routes.post("/queues/{destination}/cancel")
    async def cancel(
        request: Request,
        destination: Destination,
        body: CancelBody,
        who: Annotated[Principal, Depends(OPERATOR)],
    ) -> dict[str, int]:
        """Remove the named entries, or every entry of ``state``; they are not sent."""
        if not body.entries and body.state is None:
            raise HTTPException(
                422, 'name the "entries" to cancel, or a "state": waiting, dead or all'
            )
        state: ForwardState | None = routing.state_of(body.state or "")
        removed = await context_of(request).catalog.cancel_forwards(
            destination, body.entries, state if not body.entries else None
        )
        await audit(
            request,
            who,
            "api",
            routing.canceled_detail(destination, body.entries, state, removed),
            destination=destination,
        )
        return {"canceled": removed}

    @routes.get("/rules")
    async def list_rules(
        request: Request, _: Annotated[Principal, Depends(VIEWER)]
    ) -> dict[str, Any]:
        """The rules of ``MICROPACS_ROUTER__RULES_FILE`` as the file is now (edited in the
        file; the routers read it at start)."""
        view = routing.rules(context_of(request).settings)
        return {
            "file": view.file,
            "error": view.error,
            "rules": [
                {
                    "name": rule.name,
                    "match": dict(rule.match),
                    "forward": [
                        {"destination": dest, "transfer_syntax": syntax}
                        for dest, syntax in rule.forward
                    ],
                    "coerce": rule.coerce,
                }
                for rule in view.rules
            ],
        }

    return routes
