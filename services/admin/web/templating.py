"""Rendering the pages: one Jinja2 environment, autoescaped, and the headers every page has.

Every page is sent with a Content-Security-Policy allowing scripts, styles and images
from this origin only (htmx is configured in the page so that it needs no inline style
or ``eval``), never framed; images also from the origin of the qr service's DICOMweb when
MICROPACS_ADMIN__DICOMWEB_URL names one (the thumbnails and previews). htmx is optional:
when ``static/vendor/htmx.min.js`` is missing the pages leave it out and work as plain
forms and links.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from micropacs.auth.browser import LoginView, RenderLogin

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
HTMX = STATIC / "vendor" / "htmx.min.js"
STATIC_PATH = "/static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{images};"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none';"
    " object-src 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def image_origin(url: str) -> str:
    """The scheme, host and port of an absolute http(s) URL; empty for a path or nothing."""
    parts = urlsplit(url)
    # Only host[:port] characters: nothing that could end the directive or add a source.
    if parts.scheme not in ("http", "https") or not _HOST_PORT.fullmatch(parts.netloc):
        return ""
    return f"{parts.scheme}://{parts.netloc}"


def headers(image_origins: Sequence[str] = ()) -> dict[str, str]:
    """Every page's security headers, its images allowed from ``image_origins`` too."""
    images = "".join(f" {origin}" for origin in image_origins if origin)
    return {"Content-Security-Policy": CSP.format(images=images), **HEADERS}


class Pages:
    """The template environment and what every page is given."""

    def __init__(
        self,
        nav: list[tuple[str, str]],
        *,
        warn: bool = True,
        image_origins: Sequence[str] = (),
    ) -> None:
        self.htmx = HTMX.is_file()
        self._headers = headers(image_origins)
        if not self.htmx and warn:
            log.warning(
                "htmx is not installed (%s missing): the admin pages work without their"
                " interactive parts; install it with `make htmx` (tools/htmx/install.sh)",
                HTMX,
            )
        self._env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals["static"] = lambda name: f"{STATIC_PATH}/{name}"
        self._nav = nav

    def text(self, template: str, **values: Any) -> str:
        """A template rendered with ``values`` (the login page's renderer uses it)."""
        return self._env.get_template(template).render(htmx=self.htmx, **values)

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        base: dict[str, Any] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """A whole page, or its fragment for htmx, with the security headers."""
        body = self.text(
            template, nav=self._nav, current=request.url.path, **(base or {}), **values
        )
        return HTMLResponse(body, status_code=status, headers=self._headers)


def login_renderer() -> RenderLogin:
    """The login page of :func:`micropacs.auth.browser.login_routes`, in the pages' frame."""
    pages = Pages([], warn=False)

    def render(request: Request, view: LoginView) -> Response:
        return pages.render(
            request, "login.html", status=view.status, title="Log in", view=view, error=view.error
        )

    return render
