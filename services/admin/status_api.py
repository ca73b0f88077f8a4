"""``/api/status``: the health of the archive at a glance (:mod:`services.admin.status`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from micropacs.auth.principal import Principal
from services.admin.access import VIEWER, context_of


def router() -> APIRouter:
    """The status route."""
    routes = APIRouter(tags=["status"])

    @routes.get("/status")
    async def status(request: Request, _: Annotated[Principal, Depends(VIEWER)]) -> dict[str, Any]:
        """Backends, catalog counts, storage used per storage group, index lag, disk space,
        recent rates and separate services' health."""
        context = context_of(request)
        return (await context.status.read(context)).as_json()

    return routes
