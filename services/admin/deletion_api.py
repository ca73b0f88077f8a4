"""``DELETE /api/studies/{uid}`` (and a series, an instance): administrators remove what
the archive holds, through :func:`micropacs.deletion.request_deletion` (the deletion is
acknowledged by the event bus, then applied by the index: 202)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from micropacs.auth.principal import Principal
from micropacs.deletion import DeletionTarget, request_deletion
from services.admin.access import ADMINISTRATOR, audit, context_of

Reason = Annotated[str, Query(max_length=1024, description="Why (kept in the audit trail).")]


def router() -> APIRouter:
    """The deletion routes."""
    routes = APIRouter(tags=["deletion"])

    async def delete(
        request: Request, who: Principal, target: DeletionTarget, reason: str
    ) -> dict[str, Any]:
        context = context_of(request)
        receipt = await request_deletion(context.bus, context.catalog, target, who.name, reason)
        context.metrics.deletions.labels(level=target.level).inc()
        await audit(
            request,
            who,
            "study-deleted",
            f"{target.level} deletion {receipt.deletion_id}",
            study_uids=[target.study_uid],
        )
        return {"deletion_id": receipt.deletion_id, "instances": receipt.instances}

    @routes.delete("/studies/{study_uid}", status_code=202)
    async def delete_study(
        request: Request,
        study_uid: str,
        who: Annotated[Principal, Depends(ADMINISTRATOR)],
        reason: Reason = "",
    ) -> dict[str, Any]:
        """Delete a study."""
        return await delete(request, who, DeletionTarget(study_uid), reason)

    @routes.delete("/studies/{study_uid}/series/{series_uid}", status_code=202)
    async def delete_series(
        request: Request,
        study_uid: str,
        series_uid: str,
        who: Annotated[Principal, Depends(ADMINISTRATOR)],
        reason: Reason = "",
    ) -> dict[str, Any]:
        """Delete a series."""
        return await delete(request, who, DeletionTarget(study_uid, series_uid), reason)

    @routes.delete("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", status_code=202)
    async def delete_instance(
        request: Request,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        who: Annotated[Principal, Depends(ADMINISTRATOR)],
        reason: Reason = "",
    ) -> dict[str, Any]:
        """Delete an instance."""
        return await delete(request, who, DeletionTarget(study_uid, series_uid, sop_uid), reason)

    return routes
