"""The browser's side of authentication: the login and logout routes, and what pages use.

:func:`login_routes` gives the routes an admin service mounts:

- ``GET /login``: the login page, rendered by the caller's :data:`RenderLogin`
  (:func:`plain_login_page` by default) with a login-form token that a short-lived
  signed cookie doubles (no login CSRF: another site cannot log a browser in as
  someone else);
- ``POST /login``: a local user's name and password
  (:meth:`~micropacs.auth.local.LocalCredentials.user_principal`, throttled as every
  password check), then a session (:mod:`micropacs.auth.session`) and See Other to
  the page asked for; a failure answers 401 with the form again, never saying whether
  the name or the password was wrong (429 or 503 with ``Retry-After`` when throttled);
- ``POST /logout``: ends the session (its CSRF token required), then the login page;
- ``GET /login/oidc`` and ``GET /login/oidc/callback``: single sign-on through the
  OpenID Connect provider (:mod:`micropacs.auth.oidc_login`).

Each login, failed login and logout is reported to the caller's :data:`Report` (the
audit trail), with the name tried, the client's address and how, never a password.
The gate (:mod:`micropacs.auth.gate`) leaves these paths open and takes the session
cookie everywhere but DICOMweb. Pages read :func:`current_principal` and
:func:`csrf_token`.
"""

from __future__ import annotations

import html
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Literal

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from micropacs.auth import csrf
from micropacs.auth.local import LocalCredentials
from micropacs.auth.oidc_login import Flow, LoginFailed, OidcLogin
from micropacs.auth.principal import Principal
from micropacs.auth.session import (
    COOKIE,
    Session,
    SessionCookies,
    cookie_header,
    cookie_value,
)
from micropacs.auth.throttle import ChecksBusy
from micropacs.dicomweb.responses import ROOT

log = logging.getLogger(__name__)

LOGIN_PATH: Final = "/login"
LOGOUT_PATH: Final = "/logout"
OIDC_PATH: Final = "/login/oidc"
CALLBACK_PATH: Final = "/login/oidc/callback"
LOGIN_PATHS: Final = (LOGIN_PATH, LOGOUT_PATH, OIDC_PATH, CALLBACK_PATH)
OPEN_PREFIXES: Final = ("/static/",)
"""The pages' stylesheets and scripts, which the login page needs before any session."""
LOGIN_COOKIE: Final = "micropacs_login"
FLOW_COOKIE: Final = "micropacs_oidc"
FLOW_SECONDS: Final = 600.0
"""How long a login form or a single sign-on round trip may take."""
MAX_LOGIN_FORM: Final = 16 * 1024
WRONG: Final = "The user name or the password is not right."


def accepts_session(path: str) -> bool:
    """Whether a session cookie is credentials for ``path`` (everything but DICOMweb)."""
    return path != ROOT and not path.startswith(ROOT + "/")


def session_authenticates(path: str, method: str) -> bool:
    """Whether a session cookie is credentials for a request: everywhere but DICOMweb,
    and on DICOMweb for reads, so the pages' thumbnails and previews load; DICOMweb's
    writes (STOW-RS) take a token."""
    return accepts_session(path) or method in ("GET", "HEAD")


def current_principal(request: Request) -> Principal | None:
    """The principal the gate found for ``request`` (None when nothing authenticated it)."""
    principal = request.scope.get("state", {}).get("principal")
    return principal if isinstance(principal, Principal) else None


def csrf_token(request: Request) -> str:
    """The CSRF token a page's forms (``csrf_token``) and htmx (``X-CSRF-Token``) send back;
    "" when the request came without a session (a bearer token needs none)."""
    session = request.scope.get("state", {}).get("session")
    return session.csrf_token if isinstance(session, Session) else ""


@dataclass(frozen=True)
class LoginEvent:
    """A login, a failed login or a logout, for the audit trail (its ``kind``s)."""

    kind: Literal["login", "login-failed", "logout"]
    actor: str
    """The principal, or the user name tried ("" when a provider named none)."""
    role: str
    source: str
    """The client's address."""
    detail: str
    """How (``password``, ``oidc``) and, for a failure, why."""


Report = Callable[[LoginEvent], Awaitable[None]]


@dataclass(frozen=True)
class LoginView:
    """What the login page shows."""

    csrf_token: str
    """The form's ``csrf_token`` field (the login-form token)."""
    next: str
    """The ``next`` field: the local path to go to after logging in."""
    error: str
    """What went wrong, or ""."""
    password: bool
    """Whether the user name and password form is offered."""
    oidc: bool
    """Whether the single sign-on link (``/login/oidc?next=…``) is offered."""
    status: int
    """The HTTP status to answer with (200, 401, 403, 429, 503…)."""


RenderLogin = Callable[[Request, LoginView], Response]


def plain_login_page(request: Request, view: LoginView) -> Response:
    """A minimal login page, for a server without the web UI's templates."""
    parts = ["<!doctype html><html lang='en'><head><title>micropacs login</title></head><body>"]
    if view.error:
        parts.append(f"<p role='alert'>{html.escape(view.error)}</p>")
    if view.password:
        parts.append(
            "<form method='post' action='/login'>"
            f"<input type='hidden' name='csrf_token' value='{html.escape(view.csrf_token)}'>"
            f"<input type='hidden' name='next' value='{html.escape(view.next)}'>"
            "<label>User name <input name='username' autocomplete='username' required></label>"
            "<label>Password <input name='password' type='password'"
            " autocomplete='current-password' required></label>"
            "<button type='submit'>Log in</button></form>"
        )
    if view.oidc:
        query = html.escape(urllib.parse.urlencode({"next": view.next}))
        parts.append(f"<a href='{OIDC_PATH}?{query}'>Log in with single sign-on</a>")
    parts.append("</body></html>")
    return HTMLResponse("".join(parts), status_code=view.status, headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


def safe_next(value: str, home: str) -> str:
    """``value`` when it is a path of this site, else ``home`` (no open redirect)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return home
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return home
    return value


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


class LoginRoutes:
    """The handlers of :func:`login_routes`."""

    def __init__(
        self,
        sessions: SessionCookies,
        credentials: LocalCredentials | None,
        oidc: OidcLogin | None,
        report: Report,
        render: RenderLogin,
        home: str,
        redirect_url: str,
    ) -> None:
        self._sessions = sessions
        self._credentials = credentials
        self._oidc = oidc
        self._report = report
        self._render = render
        self._home = home
        self._redirect_url = redirect_url

    def routes(self) -> list[BaseRoute]:
        """The login, logout and single sign-on routes."""
        routes: list[BaseRoute] = [
            Route(LOGIN_PATH, self.page, methods=["GET"]),
            Route(LOGIN_PATH, self.login, methods=["POST"]),
            Route(LOGOUT_PATH, self.logout, methods=["POST"]),
        ]
        if self._oidc is not None:
            routes.append(Route(OIDC_PATH, self.oidc_start, methods=["GET"]))
            routes.append(Route(CALLBACK_PATH, self.oidc_callback, methods=["GET"]))
        return routes

    async def page(self, request: Request) -> Response:
        """The login page."""
        return self._form(request, request.query_params.get("next", ""), "", 200)

    async def login(self, request: Request) -> Response:
        """Check a user name and password; open a session or show the form again."""
        if self._credentials is None:
            return JSONResponse({"error": "password login is not offered here"}, 404)
        if not csrf.is_form(request.scope):
            return JSONResponse({"error": "send the login form URL-encoded"}, 415)
        try:
            body = await csrf.read_body(request.receive, MAX_LOGIN_FORM)
        except csrf.FormTooLarge as exc:
            return JSONResponse({"error": str(exc)}, 413)
        form = csrf.parse_form(body)
        next_path = form.get("next", "")
        sealed = cookie_value(request.scope["headers"], LOGIN_COOKIE)
        kept = self._sessions.unseal(sealed, "login", FLOW_SECONDS) if sealed else None
        if kept is None or csrf.refusal(str(kept.get("t", "")), form.get(csrf.FIELD, "")):
            return self._form(request, next_path, "The login form expired: try again.", 403)
        name, password = form.get("username", ""), form.get("password", "")
        address = _address(request)
        try:
            principal = await self._credentials.user_principal(name, password, address)
        except ChecksBusy as busy:
            await self._report(LoginEvent("login-failed", name, "", address, "password: busy"))
            response = self._form(request, next_path, f"{busy}: try again shortly.", busy.http)
            response.headers["Retry-After"] = str(max(1, round(busy.retry_after)))
            return response
        if principal is None:
            await self._report(LoginEvent("login-failed", name, "", address, "password"))
            return self._form(request, next_path, WRONG, 401)
        return await self._open(request, principal, "password", next_path)

    async def logout(self, request: Request) -> Response:
        """End the request's session (its CSRF token required) and go to the login page."""
        value = cookie_value(request.scope["headers"], COOKIE)
        session = self._sessions.read(value) if value else None
        if session is not None:
            try:
                token, _ = await csrf.presented(request.scope, request.receive)
            except csrf.FormTooLarge as exc:
                return JSONResponse({"error": str(exc)}, 413)
            reason = csrf.refusal(session.csrf_token, token)
            if reason:
                return JSONResponse({"error": reason}, 403)
            self._sessions.revoke(session)
            await self._report(
                LoginEvent("logout", session.name, session.role.value, _address(request), "")
            )
        response = RedirectResponse(LOGIN_PATH, status_code=303, headers=_NO_STORE)
        self._clear(request, response, COOKIE)
        return response

    async def oidc_start(self, request: Request) -> Response:
        """Send the browser to the provider, the flow kept in a signed cookie."""
        assert self._oidc is not None
        next_path = safe_next(request.query_params.get("next", ""), self._home)
        try:
            url, flow = await self._oidc.start(self._callback_url(request), next_path)
        except LoginFailed as exc:
            return self._form(request, next_path, str(exc), exc.status)
        response = RedirectResponse(url, status_code=303, headers=_NO_STORE)
        response.headers.append(
            "set-cookie",
            cookie_header(
                FLOW_COOKIE,
                self._sessions.seal(flow.values(), "oidc"),
                secure=self._secure(request),
                max_age=FLOW_SECONDS,
                path=OIDC_PATH,
            ).decode("latin-1"),
        )
        return response

    async def oidc_callback(self, request: Request) -> Response:
        """Finish a single sign-on: check the state, exchange the code, open a session."""
        assert self._oidc is not None
        address = _address(request)
        sealed = cookie_value(request.scope["headers"], FLOW_COOKIE)
        kept = self._sessions.unseal(sealed, "oidc", FLOW_SECONDS) if sealed else None
        flow = None if kept is None else Flow.of(kept)
        params = request.query_params
        if flow is None:
            failed = LoginFailed("the single sign-on took too long or was not started here")
            await self._report(LoginEvent("login-failed", "", "", address, f"oidc: {failed}"))
            return self._form(request, "", str(failed), failed.status)
        try:
            if params.get("error"):
                raise LoginFailed(f"the provider refused the login ({params['error'][:64]})")
            principal = await self._oidc.finish(
                flow,
                params.get("state", ""),
                params.get("code", ""),
                self._callback_url(request),
                address,
            )
        except LoginFailed as exc:
            await self._report(LoginEvent("login-failed", "", "", address, f"oidc: {exc}"))
            response = self._form(request, flow.next, str(exc), exc.status)
            self._clear(request, response, FLOW_COOKIE, OIDC_PATH)
            return response
        except ChecksBusy as busy:
            response = self._form(request, flow.next, f"{busy}: try again shortly.", busy.http)
            response.headers["Retry-After"] = str(max(1, round(busy.retry_after)))
            return response
        response = await self._open(request, principal, "oidc", flow.next)
        self._clear(request, response, FLOW_COOKIE, OIDC_PATH)
        return response

    async def _open(
        self, request: Request, principal: Principal, method: str, next_path: str
    ) -> Response:
        value, session = self._sessions.open(principal, method)
        await self._report(
            LoginEvent("login", session.name, session.role.value, _address(request), method)
        )
        target = safe_next(next_path, self._home)
        response = RedirectResponse(target, status_code=303, headers=_NO_STORE)
        response.headers.append(
            "set-cookie",
            cookie_header(COOKIE, value, secure=self._secure(request), max_age=None).decode(
                "latin-1"
            ),
        )
        self._clear(request, response, LOGIN_COOKIE, LOGIN_PATH)
        return response

    def _form(self, request: Request, next_path: str, error: str, status: int) -> Response:
        """The login page with a fresh login-form token (its cookie set on the answer)."""
        token = csrf.new_token()
        view = LoginView(
            csrf_token=token,
            next=safe_next(next_path, self._home),
            error=error,
            password=self._credentials is not None,
            oidc=self._oidc is not None,
            status=status,
        )
        response = self._render(request, view)
        response.headers.append(
            "set-cookie",
            cookie_header(
                LOGIN_COOKIE,
                self._sessions.seal({"t": token}, "login"),
                secure=self._secure(request),
                max_age=FLOW_SECONDS,
                path=LOGIN_PATH,
            ).decode("latin-1"),
        )
        return response

    def _clear(self, request: Request, response: Response, name: str, path: str = "/") -> None:
        header = cookie_header(name, "", secure=self._secure(request), max_age=0, path=path)
        response.headers.append("set-cookie", header.decode("latin-1"))

    def _secure(self, request: Request) -> bool:
        return self._sessions.secure(request.url.scheme)

    def _callback_url(self, request: Request) -> str:
        return self._redirect_url or str(request.base_url).rstrip("/") + CALLBACK_PATH


def login_routes(
    sessions: SessionCookies,
    report: Report,
    *,
    credentials: LocalCredentials | None = None,
    oidc: OidcLogin | None = None,
    render: RenderLogin = plain_login_page,
    home: str = "/",
    redirect_url: str = "",
) -> list[BaseRoute]:
    """The login, logout and (with ``oidc``) single sign-on routes, to mount at the root.

    ``credentials`` offers the user name and password form; ``oidc`` the provider's
    login; ``report`` receives each :class:`LoginEvent`; ``render`` draws the login page;
    ``home`` is where a login without a ``next`` page goes; ``redirect_url`` the
    callback URL registered at the provider (default: this request's, ending
    ``/login/oidc/callback``).
    """
    handlers = LoginRoutes(sessions, credentials, oidc, report, render, home, redirect_url)
    return handlers.routes()
