"""The admin REST API: a FastAPI application mounted at ``/api``.

Every route sits behind the process's authentication gate (:mod:`micropacs.auth.gate`),
which lets viewers read and operators write; routes that need more (administrators:
nodes, deletion, users and tokens) check the principal's role themselves. The OpenAPI
description is at ``/api/openapi.json``.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.admin.context import AdminContext

PREFIX = "/api"


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
    return api
