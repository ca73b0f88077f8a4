"""The admin web UI's routes, which the admin service mounts beside its REST API.

Pages are server-rendered (Jinja2, autoescaped) and work as plain links and forms; htmx,
when installed (``make htmx``), makes sending, verifying and paging update in place.
Each page calls the same functions as the REST API, never the API over HTTP.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from services.admin.context import AdminContext
from services.admin.web.browse import Browse
from services.admin.web.manage import Manage
from services.admin.web.nodes import Nodes
from services.admin.web.routing import Routing
from services.admin.web.site import NAV, Site
from services.admin.web.templating import (
    STATIC,
    STATIC_PATH,
    Pages,
    image_origin,
    login_renderer,
)
from services.admin.web.worklist import Worklists

__all__ = ["login_renderer", "page_routes"]


async def _home(request: Request) -> Response:
    return RedirectResponse("/studies", status_code=303)


def page_routes(context: AdminContext) -> list[BaseRoute]:
    """Every page of the web UI and its static files, over ``context``."""
    dicomweb = image_origin(context.settings.admin.dicomweb_url)
    site = Site(context, Pages(NAV, image_origins=[dicomweb]))
    return [
        Route("/", _home, methods=["GET"]),
        Mount(STATIC_PATH, app=StaticFiles(directory=STATIC), name="static"),
        *Browse(site).routes(),
        *Nodes(site).routes(),
        *Routing(site).routes(),
        *Worklists(site).routes(),
        *Manage(site).routes(),
    ]
