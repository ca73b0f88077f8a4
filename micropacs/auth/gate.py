"""The gate in front of every HTTP route: who is calling, and may they do this?

Reading (GET, HEAD) needs the viewer role, anything else the operator role
(STOW-RS now; the admin API declares more). No credentials, or credentials
that do not check out, answer 401 with a ``WWW-Authenticate`` challenge
(RFC 9110 11.6.1); a role that may not act answers 403. A credential check the
verifier may not take now (:mod:`micropacs.auth.throttle`) answers 503, or 429
after repeated failures, with ``Retry-After``. ``/healthz``,
``/readyz`` and ``/openapi.json`` are always open, ``/metrics`` unless configured
otherwise. Only the lifespan scope passes unauthenticated; a WebSocket is refused.

With the local or oidc backend a browser session cookie (:mod:`micropacs.auth.session`)
is credentials too, outside DICOMweb, when the request has no ``Authorization``;
its unsafe requests must carry the session's CSRF token
(:mod:`micropacs.auth.csrf`, 403 otherwise) and its cookie is re-signed as it is
used. The login routes (:data:`~micropacs.auth.browser.LOGIN_PATHS`) and the pages'
static files are open; a browser asking for a page without credentials is sent to
``/login``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from micropacs.auth import csrf
from micropacs.auth.browser import (
    LOGIN_PATH,
    LOGIN_PATHS,
    OPEN_PREFIXES,
    accepts_session,
    session_authenticates,
)
from micropacs.auth.local import LocalCredentials
from micropacs.auth.oidc import OidcTokens
from micropacs.auth.principal import LOCAL_CLIENT, Principal, Role
from micropacs.auth.session import (
    COOKIE,
    Session,
    SessionCookies,
    cookie_header,
    cookie_value,
    shared_sessions,
)
from micropacs.auth.throttle import ChecksBusy
from micropacs.config import Settings
from micropacs.dicomweb.openapi import OPENAPI_PATH
from micropacs.ports import Catalog

log = logging.getLogger(__name__)

Authenticate = Callable[[Scope], Awaitable[Principal | None]]
READING = {"GET", "HEAD"}
ALWAYS_OPEN = ("/healthz", "/readyz", OPENAPI_PATH, *LOGIN_PATHS)  # these name no data
EVERYONE = Principal(name="anyone", role=Role.ADMINISTRATOR, via="off")


class NoAuthentication(Exception):
    """The server would be open to the network: refuse to start."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def require_authentication(settings: Settings) -> None:
    """Refuse a server that would answer the network without any authentication."""
    if settings.auth.backend is None and not is_loopback(settings.http.host):
        raise NoAuthentication(
            f"HTTP listens on {settings.http.host} with no authentication: set"
            " MICROPACS_AUTH__BACKEND=local (then create tokens with `micropacs tokens add`)"
            " or oidc, or =off to serve everyone without credentials"
        )


def authenticator(
    settings: Settings, catalog: Catalog | None, sessions: SessionCookies | None = None
) -> Authenticate:
    """How requests are authenticated, from the settings (see :class:`AuthSettings`).

    The local and oidc backends also take the browser session cookies of ``sessions``
    (default: the process's, :func:`~micropacs.auth.session.shared_sessions`).
    """
    backend = settings.auth.backend
    if backend is None:
        require_authentication(settings)
        return _local_clients
    if backend == "off":
        log.warning("HTTP authentication is off: every client may read and write every study")
        return _everyone
    cookies = sessions or shared_sessions(settings.auth)
    if backend == "oidc":
        return _with_sessions(_bearer(OidcTokens(settings.auth)), cookies)
    if catalog is None:
        raise RuntimeError("local authentication needs the catalog")
    return _with_sessions(_local(LocalCredentials(catalog)), cookies)


def _with_sessions(authenticate: Authenticate, sessions: SessionCookies) -> Authenticate:
    """``authenticate``, or else the session cookie of a request without Authorization."""

    async def either(scope: Scope) -> Principal | None:
        if _header(scope, b"authorization") or not session_authenticates(
            scope["path"], scope["method"]
        ):
            return await authenticate(scope)
        value = cookie_value(scope.get("headers", []), COOKIE)
        if not value:
            return None
        session = sessions.read(value)
        if session is None:
            return None
        state = scope.setdefault("state", {})
        state["session"] = session
        state["csrf_token"] = session.csrf_token
        refreshed = sessions.refreshed(session)
        if refreshed is not None:
            secure = sessions.secure(str(scope.get("scheme", "http")))
            state["session_cookie"] = cookie_header(COOKIE, refreshed, secure=secure, max_age=None)
        return session.principal

    return either


async def _local_clients(scope: Scope) -> Principal | None:
    client = scope.get("client")
    return LOCAL_CLIENT if client and is_loopback(str(client[0])) else None


async def _everyone(scope: Scope) -> Principal | None:
    return EVERYONE


def _bearer(tokens: OidcTokens) -> Authenticate:
    async def authenticate(scope: Scope) -> Principal | None:
        scheme, _, value = _header(scope, b"authorization").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return await tokens.principal(value.strip(), _address(scope))

    return authenticate


def _local(credentials: LocalCredentials) -> Authenticate:
    async def authenticate(scope: Scope) -> Principal | None:
        scheme, _, value = _header(scope, b"authorization").partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return await credentials.token_principal(value)
        if scheme.lower() == "basic" and value:
            try:
                name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, ValueError):  # not base64, not ASCII, or not UTF-8
                return None
            return await credentials.user_principal(name, password, _address(scope))
        return None

    return authenticate


class Gate:
    """ASGI middleware: authenticate, then authorise by method."""

    def __init__(
        self, app: ASGIApp, authenticate: Authenticate, *, metrics_open: bool, basic: bool
    ) -> None:
        self._app = app
        self._authenticate = authenticate
        self._open = (*ALWAYS_OPEN, "/metrics") if metrics_open else ALWAYS_OPEN
        challenge = 'Bearer realm="micropacs"' + (', Basic realm="micropacs"' if basic else "")
        self._challenge = challenge.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (
            scope["type"] == "http"
            and (scope["path"] in self._open or scope["path"].startswith(OPEN_PREFIXES))
        ):
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":
            # No route speaks WebSocket (or anything else): refuse before the app sees it.
            await _close(scope, send)
            return
        try:
            principal = await self._authenticate(scope)
        except ChecksBusy as busy:
            await _refuse(send, busy.http, str(busy), retry_after=busy.retry_after)
            return
        if principal is None:
            if _wants_page(scope):
                await _to_login(scope, send)
                return
            await _refuse(send, 401, "credentials missing or not valid", self._challenge)
            return
        state = scope.setdefault("state", {})
        session = state.get("session")
        if isinstance(session, Session) and scope["method"] in csrf.UNSAFE:
            try:
                token, receive = await csrf.presented(scope, receive)
            except csrf.FormTooLarge as exc:
                await _refuse(send, 413, str(exc))
                return
            reason = csrf.refusal(session.csrf_token, token)
            if reason:
                await _refuse(send, 403, reason)
                return
        required = Role.VIEWER if scope["method"] in READING else Role.OPERATOR
        if not principal.role.allows(required):
            await _refuse(send, 403, f"the {principal.role} role may not do this")
            return
        state["principal"] = principal
        cookie = state.get("session_cookie")
        await self._app(scope, receive, send if cookie is None else _with_cookie(send, cookie))


def _with_cookie(send: Send, cookie: bytes) -> Send:
    """``send`` adding a ``Set-Cookie`` of ``cookie`` to the response's headers."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return sending


def _wants_page(scope: Scope) -> bool:
    """A browser navigating to a page (not the API, not DICOMweb) without credentials."""
    return (
        scope["method"] == "GET"
        and accepts_session(scope["path"])
        and not scope["path"].startswith("/api")
        and "text/html" in _header(scope, b"accept")
        and not _header(scope, b"authorization")
    )


async def _to_login(scope: Scope, send: Send) -> None:
    """See Other to the login page, which comes back to the page asked for."""
    query = bytes(scope["query_string"]).decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    location = f"{LOGIN_PATH}?{urllib.parse.urlencode({'next': target})}".encode("latin-1")
    headers = [(b"location", location), (b"content-length", b"0"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _close(scope: Scope, send: Send) -> None:
    """Refuse a WebSocket handshake (HTTP 403, RFC 6455 4.2.2) or any other scope."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})


async def _refuse(
    send: Send, status: int, reason: str, challenge: bytes = b"", retry_after: float = 0.0
) -> None:
    body = json.dumps({"error": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if challenge:
        headers.append((b"www-authenticate", challenge))
    if retry_after > 0:
        headers.append((b"retry-after", b"%d" % math.ceil(retry_after)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
