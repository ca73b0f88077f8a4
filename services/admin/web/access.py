"""Who is asking, what they may do, and the answers a page gives when they may not.

The gate (:mod:`micropacs.auth.gate`) has already let only viewers read and operators
write; the pages that need the administrator role check it here. Buttons a role cannot
use are not shown, and the server refuses them anyway.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.requests import Request

from micropacs.auth.principal import Principal, Role
from micropacs.errors import MicropacsError


class Refused(MicropacsError):
    """The principal's role may not do this (HTTP 403)."""

    http = HTTPStatus.FORBIDDEN


def current(request: Request) -> Principal | None:
    """The request's principal as the gate set it (None: no gate in front)."""
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def principal_of(request: Request) -> Principal:
    """The request's principal, set by the gate."""
    principal = current(request)
    if principal is None:
        raise Refused("no principal: the page is served without the authentication gate")
    return principal


def require(request: Request, role: Role) -> Principal:
    """The principal, if its role allows what ``role`` may; :class:`Refused` otherwise."""
    principal = principal_of(request)
    if not principal.role.allows(role):
        raise Refused(f"the {principal.role} role may not do this; ask an {role}")
    return principal


def may(request: Request, role: Role) -> bool:
    """Whether the request's principal has at least ``role`` (to show a button)."""
    principal = current(request)
    return principal is not None and principal.role.allows(role)
