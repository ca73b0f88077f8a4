"""The admin REST API: a FastAPI application mounted at ``/api``.

Every route sits behind the process's authentication gate (:mod:`micropacs.auth.gate`),
which answers 401 without valid credentials and lets viewers read and operators
write; each route states the role it needs (:mod:`services.admin.access`: viewers
browse, preview, download and list the router's queues; operators also send, schedule,
verify and retry or cancel queue entries; administrators also manage nodes, delete and
manage users and tokens) and answers 403 to a lower one. Errors are JSON
``{"error": reason}``; the OpenAPI description is at ``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from micropacs.errors import MicropacsError, http_status
from services.admin import (
    audit_api,
    deletion_api,
    nodes_api,
    routing_api,
    status_api,
    studies_api,
    users_api,
    worklist_api,
)
from services.admin.context import AdminContext

PREFIX = "/api"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems: list[dict[str, Any]] = [
        {"where": ".".join(str(part) for part in error.get("loc", ())), "why": error.get("msg")}
        for error in exc.errors()
    ]
    reason = "; ".join(f"{p['where']}: {p['why']}" for p in problems)
    return JSONResponse({"error": reason, "problems": problems}, 422)


async def _micropacs_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc) or type(exc).__name__}, http_status(exc))


def build_api(context: AdminContext) -> FastAPI:
    """The admin API over ``context``, to mount at :data:`PREFIX`."""
    api = FastAPI(
        title="micropacs admin API",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        servers=[{"url": PREFIX}],
    )
    api.state.context = context
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(MicropacsError, _micropacs_error)
    for module in (
        nodes_api,
        studies_api,
        deletion_api,
        worklist_api,
        users_api,
        status_api,
        routing_api,
        audit_api,
    ):
        api.include_router(module.router())
    return api
