"""Who calls the admin API, what their role allows, and the audit record of what they did.

The process's authentication gate (:mod:`micropacs.auth.gate`) has authenticated the
request and let a viewer read or an operator write; the routes that need more state it
with :func:`requires`. A request that reached the API without a principal (an app served
without the gate) is refused with 401.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from fastapi import HTTPException, Request

from micropacs.auth.principal import Principal, Role
from micropacs.events import AuditRecorded, Outcome
from services.admin.context import AdminContext

log = logging.getLogger(__name__)


def principal_of(request: Request) -> Principal:
    """The request's principal, as the gate left it; 401 when there is none."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise HTTPException(401, "credentials missing or not valid")
    return principal


def requires(role: Role) -> Callable[[Request], Principal]:
    """A dependency giving the principal when its role allows what ``role`` may; 403 else."""

    def check(request: Request) -> Principal:
        principal = principal_of(request)
        if not principal.role.allows(role):
            raise HTTPException(403, f"the {principal.role} role may not do this; {role} may")
        return principal

    return check


VIEWER = requires(Role.VIEWER)
OPERATOR = requires(Role.OPERATOR)
ADMINISTRATOR = requires(Role.ADMINISTRATOR)


def context_of(request: Request) -> AdminContext:
    """The admin context of the app serving ``request``."""
    context: AdminContext = request.app.state.context
    return context


async def audit(
    request: Request,
    principal: Principal,
    kind: str,
    detail: str,
    *,
    failed: bool = False,
    destination: str = "",
    study_uids: Sequence[str] = (),
) -> None:
    """Record what ``principal`` did in the audit trail (never fails the action)."""
    trail = context_of(request).audit
    if trail is None:
        return
    client = request.client
    await trail.record(
        AuditRecorded(
            kind=kind,
            outcome=Outcome.MINOR_FAILURE if failed else Outcome.SUCCESS,
            actor=principal.name,
            role=principal.role.value,
            source=client.host if client else "",
            destination=destination,
            study_uids=tuple(study_uids),
            detail=detail,
        )
    )
