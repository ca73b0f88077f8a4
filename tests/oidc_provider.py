"""A small OpenID Connect provider for the tests: the authorization code flow with PKCE.

It serves what a site's identity provider serves, over real HTTP on loopback
(:class:`~micropacs.http.HttpServer` on a loop thread of its own):

- ``/.well-known/openid-configuration`` (OpenID Connect Discovery 3) and ``/jwks``;
- ``/authorize`` (Core 3.1.2): checks the client, the registered redirect URI, a
  ``code`` response type, the ``openid`` scope and an ``S256`` code challenge
  (RFC 7636 4.3), approves the configured user without asking and sends the browser
  back with a one-time code and the ``state``; a bad client or redirect URI answers
  400 without redirecting (RFC 6749 4.1.2.1);
- ``/token`` (Core 3.1.3): authenticates the client (HTTP Basic), takes each code once,
  checks the redirect URI and that ``BASE64URL(SHA256(code_verifier))`` is the code's
  challenge (RFC 7636 4.6), then returns an ID token (audience the client, the
  authorization request's nonce) and an access token (audience :attr:`audience`),
  both RS256 JWTs carrying the user's claims (roles); errors are RFC 6749 5.2's.

Every refusal is kept in :attr:`OidcProvider.refusals`, so a test sees which check
refused. The signing key is an RSA key made with ``cryptography``, as
:mod:`tests.integration.token_issuer` makes its own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from micropacs.http import HttpServer
from tests.integration.token_issuer import new_key

KEY_ID = "provider-key-1"
CODE_SECONDS = 60.0


@dataclass
class Grant:
    """What an authorization request asked for, kept under its code until redeemed."""

    redirect_uri: str
    challenge: str
    nonce: str
    scope: str
    issued: float


@dataclass
class OidcProvider:
    """The provider's configuration and what it saw; change the user's claims or the ID
    token's lifetime between logins."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    subject: str = "dr.novak"
    claims: dict[str, Any] = field(default_factory=lambda: {"roles": ["viewer"]})
    """Claims of both tokens besides the registered ones (the roles)."""
    audience: str = "micropacs"
    """The access token's audience (the API's, ``MICROPACS_AUTH__OIDC_AUDIENCE``)."""
    id_token_lifetime: float = 300.0
    """Seconds an ID token is valid from its issue (negative: issued expired)."""
    url: str = ""
    refusals: list[str] = field(default_factory=list)
    authorizations: list[dict[str, str]] = field(default_factory=list)
    """The query of every authorization request."""
    _grants: dict[str, Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- endpoints ----------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return JSONResponse({"keys": [{**public, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]})

    async def authorize(self, request: Request) -> Response:
        query = dict(request.query_params)
        self.authorizations.append(query)
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or redirect_uri not in self.redirect_uris:
            return self._refuse_page("unknown client or redirect URI")
        if query.get("response_type") != "code":
            return self._back(redirect_uri, query, error="unsupported_response_type")
        if "openid" not in query.get("scope", "").split():
            return self._back(redirect_uri, query, error="invalid_scope")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return self._back(redirect_uri, query, error="invalid_request")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._grants[code] = Grant(
                redirect_uri=redirect_uri,
                challenge=query["code_challenge"],
                nonce=query.get("nonce", ""),
                scope=query["scope"],
                issued=time.time(),
            )
        return self._back(redirect_uri, query, code=code)

    async def token(self, request: Request) -> Response:
        if not self._client_authenticated(request.headers.get("authorization", "")):
            return self._token_error("invalid_client", 401)
        values = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        if values.get("grant_type") != "authorization_code":
            return self._token_error("unsupported_grant_type")
        with self._lock:  # a code is redeemed once, whatever the outcome
            grant = self._grants.pop(values.get("code", ""), None)
        if grant is None or time.time() - grant.issued > CODE_SECONDS:
            return self._token_error("invalid_grant", detail="unknown or used code")
        if values.get("redirect_uri") != grant.redirect_uri:
            return self._token_error("invalid_grant", detail="redirect_uri")
        verifier = values.get("code_verifier", "")
        if not hmac.compare_digest(challenge_of(verifier), grant.challenge):
            return self._token_error("invalid_grant", detail="PKCE verifier")
        now = int(time.time())
        common = {"iss": self.url, "sub": self.subject, "iat": now, **self.claims}
        id_token = self._sign(
            {
                **common,
                "aud": self.client_id,
                "exp": now + int(self.id_token_lifetime),
                "auth_time": now,
                "nonce": grant.nonce,
            }
        )
        access_token = self._sign({**common, "aud": self.audience, "exp": now + 300})
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
                "scope": grant.scope,
            },
            headers={"Cache-Control": "no-store"},
        )

    # -- helpers ------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/jwks", self.jwks),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
            ]
        )

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KEY_ID})

    def _client_authenticated(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        client, _, secret = decoded.partition(":")
        return client == self.client_id and hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )

    def _back(self, redirect_uri: str, query: dict[str, str], **values: str) -> Response:
        if "error" in values:
            self.refusals.append(f"authorize: {values['error']}")
        if "state" in query:
            values["state"] = query["state"]
        separator = "&" if "?" in redirect_uri else "?"
        target = redirect_uri + separator + urllib.parse.urlencode(values)
        return RedirectResponse(target, status_code=302)

    def _refuse_page(self, why: str) -> Response:
        self.refusals.append(f"authorize: {why}")
        return PlainTextResponse(why, status_code=400)

    def _token_error(self, error: str, status: int = 400, detail: str = "") -> Response:
        self.refusals.append(f"token: {error}" + (f" ({detail})" if detail else ""))
        return JSONResponse({"error": error}, status_code=status)


def challenge_of(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@contextmanager
def oidc_provider(
    client_id: str, client_secret: str, redirect_uris: list[str]
) -> Iterator[OidcProvider]:
    """A provider listening on a free loopback port for the duration of the block."""
    provider = OidcProvider(client_id, client_secret, redirect_uris)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="oidc-provider", daemon=True)
    thread.start()
    server = HttpServer(provider.app(), "127.0.0.1", 0)
    try:
        port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        provider.url = f"http://127.0.0.1:{port}"
        yield provider
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
