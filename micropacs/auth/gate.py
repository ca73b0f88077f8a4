"""The gate in front of every HTTP route: who is calling, and may they do this?

Reading (GET, HEAD) needs the viewer role, anything else the operator role
(STOW-RS now; the admin API declares more). No credentials, or credentials
that do not check out, answer 401 with a ``WWW-Authenticate`` challenge
(RFC 9110 11.6.1); a role that may not act answers 403. A credential check the
verifier may not take now (:mod:`micropacs.auth.throttle`) answers 503, or 429
after repeated failures, with ``Retry-After``. ``/healthz``,
``/readyz`` and ``/openapi.json`` are always open, ``/metrics`` unless configured
otherwise. Only the lifespan scope passes unauthenticated; a WebSocket is refused.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from micropacs.auth.local import LocalCredentials
from micropacs.auth.oidc import OidcTokens
from micropacs.auth.principal import LOCAL_CLIENT, Principal, Role
from micropacs.auth.throttle import ChecksBusy
from micropacs.config import Settings
from micropacs.dicomweb.openapi import OPENAPI_PATH
from micropacs.ports import Catalog

log = logging.getLogger(__name__)

Authenticate = Callable[[Scope], Awaitable[Principal | None]]
READING = {"GET", "HEAD"}
ALWAYS_OPEN = ("/healthz", "/readyz", OPENAPI_PATH)  # the description names no data
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


def authenticator(settings: Settings, catalog: Catalog | None) -> Authenticate:
    """How requests are authenticated, from the settings (see :class:`AuthSettings`)."""
    backend = settings.auth.backend
    if backend is None:
        require_authentication(settings)
        return _local_clients
    if backend == "off":
        log.warning("HTTP authentication is off: every client may read and write every study")
        return _everyone
    if backend == "oidc":
        return _bearer(OidcTokens(settings.auth))
    if catalog is None:
        raise RuntimeError("local authentication needs the catalog")
    return _local(LocalCredentials(catalog))


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
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in self._open):
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
            await _refuse(send, 401, "credentials missing or not valid", self._challenge)
            return
        required = Role.VIEWER if scope["method"] in READING else Role.OPERATOR
        if not principal.role.allows(required):
            await _refuse(send, 403, f"the {principal.role} role may not do this")
            return
        scope.setdefault("state", {})["principal"] = principal
        await self._app(scope, receive, send)


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
