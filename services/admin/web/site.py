"""What every page handler shares: the admin context, the templates and the page frame."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from micropacs.auth.browser import csrf_token
from micropacs.auth.principal import Role
from micropacs.errors import MicropacsError, http_status
from micropacs.events import AuditRecorded, Outcome
from services.admin.context import AdminContext
from services.admin.web.access import current, may
from services.admin.web.templating import Pages

log = logging.getLogger(__name__)

Handler = Callable[[Any, Request], Awaitable[Response]]

NAV: list[tuple[str, str]] = [
    ("/studies", "Studies"),
    ("/nodes", "Nodes"),
    ("/routing", "Routing"),
    ("/worklist", "Worklist"),
    ("/procedures", "Procedures"),
    ("/status", "Status"),
    ("/audit", "Audit"),
    ("/users", "Users and tokens"),
]


class Site:
    """The context, templates and query service the page handlers use."""

    def __init__(self, context: AdminContext, pages: Pages) -> None:
        self.context = context
        self.pages = pages
        self.query = context.query

    def frame(self, request: Request) -> dict[str, Any]:
        """What the page frame shows: who is logged in, their token, what they may do."""
        return {
            "principal": current(request),
            "csrf_token": csrf_token(request),
            "can_operate": may(request, Role.OPERATOR),
            "can_administer": may(request, Role.ADMINISTRATOR),
        }

    async def record(
        self,
        request: Request,
        kind: str,
        detail: str,
        *,
        failed: bool = False,
        destination: str = "",
        study_uids: tuple[str, ...] = (),
    ) -> None:
        """Record in the audit trail what the request's principal did (never fails it)."""
        trail, principal = self.context.audit, current(request)
        if trail is None or principal is None:
            return
        await trail.record(
            AuditRecorded(
                kind=kind,
                outcome=Outcome.MINOR_FAILURE if failed else Outcome.SUCCESS,
                actor=principal.name,
                role=principal.role.value,
                source=request.client.host if request.client else "",
                destination=destination,
                study_uids=study_uids,
                detail=detail,
            )
        )

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        """A page (or an htmx fragment) of ``template`` in the frame."""
        return self.pages.render(
            request, template, status=status, base=self.frame(request), **values
        )

    def problem(self, request: Request, error: BaseException, title: str = "") -> Response:
        """The page of an error: what went wrong and what to do next, with its status."""
        status = http_status(error)
        if status >= 500:
            log.exception("admin page %s failed", request.url.path, exc_info=error)
        shown = str(error) if isinstance(error, MicropacsError) else "an internal error"
        return self.page(
            request,
            "problem.html",
            status=status,
            title=title or "That did not work",
            error=shown[:1:].upper() + shown[1:],
            back=request.headers.get("referer", ""),
        )


def see_other(path: str) -> Response:
    """The answer to a posted form: the page to show next (Post/Redirect/Get)."""
    return RedirectResponse(path, status_code=303)


def guarded(handler: Handler) -> Handler:
    """A handler whose errors become the error page instead of a bare 500."""

    @wraps(handler)
    async def run(self: Any, request: Request) -> Response:
        try:
            return await handler(self, request)
        except MicropacsError as error:
            site: Site = self.site
            return site.problem(request, error)

    return run
