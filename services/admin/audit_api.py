"""``/api/audit``: the audit trail, newest first, by time, kind, actor, study or outcome
(administrators only: it names studies and patients)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from micropacs.auth.principal import Principal
from micropacs.events import AUDIT_KINDS
from micropacs.ports import AuditQuery
from services.admin.access import ADMINISTRATOR, context_of
from services.admin.studies_api import checked_uid

Instant = Annotated[
    str | None,
    Query(
        pattern=r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$",
        description="ISO 8601 (UTC without a zone)",
    ),
]


def router() -> APIRouter:
    """The audit route."""
    routes = APIRouter(tags=["audit"])

    @routes.get("/audit")
    async def list_audit(
        request: Request,
        _: Annotated[Principal, Depends(ADMINISTRATOR)],
        since: Instant = None,
        until: Instant = None,
        kind: Annotated[str | None, Query(max_length=32)] = None,
        actor: Annotated[str | None, Query(max_length=256)] = None,
        study_uid: Annotated[str | None, Query(max_length=64)] = None,
        outcome: Annotated[int | None, Query(ge=0, le=12)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> list[dict[str, Any]]:
        """Audit records matching every given filter, newest first."""
        if kind and kind not in AUDIT_KINDS:
            raise HTTPException(400, f"kind is one of {', '.join(sorted(AUDIT_KINDS))}")
        if study_uid:
            checked_uid(study_uid, "study UID")
        if outcome is not None and outcome not in (0, 4, 8, 12):
            raise HTTPException(400, "outcome is 0, 4, 8 or 12 (PS3.15 A.5.1)")
        query = AuditQuery(
            since=since or "",
            until=until or "",
            kind=kind or "",
            actor=actor or "",
            study_uid=study_uid or "",
            outcome=outcome,
            limit=limit,
            offset=offset,
        )
        return [asdict(record) for record in await context_of(request).catalog.audit(query)]

    return routes
