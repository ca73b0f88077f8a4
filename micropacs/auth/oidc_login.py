"""Browser login through an OpenID Connect provider: the authorization code flow with PKCE.

OpenID Connect Core 3.1 with RFC 7636 (PKCE, ``S256``): the browser is sent to the
provider's authorization endpoint with a random ``state``, ``nonce`` and code
challenge, whose verifier, state and nonce stay in a short-lived signed cookie
(:meth:`~micropacs.auth.session.SessionCookies.seal`) rather than on the server.
The provider sends the browser back with a code, which is exchanged at its token
endpoint (Authlib's ``AsyncOAuth2Client``, the client secret in HTTP Basic, or none
for a public client) for an ID token. That token is checked with the provider's
keys as bearer tokens are (:class:`~micropacs.auth.oidc.OidcTokens`: signature,
issuer, expiry), for the client id as audience and the flow's nonce (Core 3.1.3.7);
the roles come from the configured claim, and a token naming no micropacs role is
refused (403).

The endpoints come from the issuer's discovery document (https, or http to a
loopback host; its ``issuer`` the configured one exactly).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Final

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from micropacs.auth.oidc import DISCOVERY, OidcTokens, secure_url
from micropacs.auth.principal import Principal, Role
from micropacs.config import AuthSettings

log = logging.getLogger(__name__)

TIMEOUT: Final = 10.0
MAX_DOCUMENT: Final = 1 << 20


class LoginFailed(Exception):
    """An OpenID Connect login that did not succeed; ``status`` is the HTTP answer."""

    status = 401


class NoRole(LoginFailed):
    """The provider vouched for the user, who has no micropacs role."""

    status = 403


class ProviderUnavailable(LoginFailed):
    """The provider's discovery or token endpoint could not be used."""

    status = 502


@dataclass(frozen=True)
class Endpoints:
    """Where the provider authorizes and issues tokens (OpenID Connect Discovery 3)."""

    authorization: str
    token: str


@dataclass(frozen=True)
class Flow:
    """One login under way: what the browser's signed cookie keeps until the callback."""

    state: str
    nonce: str
    verifier: str
    next: str

    def values(self) -> dict[str, str]:
        """The flow as the cookie keeps it."""
        return {"s": self.state, "n": self.nonce, "v": self.verifier, "x": self.next}

    @classmethod
    def of(cls, values: dict[str, Any]) -> Flow | None:
        """The flow a cookie kept, or None for one of another shape."""
        try:
            return cls(str(values["s"]), str(values["n"]), str(values["v"]), str(values["x"]))
        except KeyError:
            return None


def client_secret(settings: AuthSettings) -> str:
    """The client secret: the file's (when set) or the variable's ("" for a public client)."""
    if settings.oidc_client_secret_file is not None:
        return settings.oidc_client_secret_file.read_text().strip()
    return settings.oidc_client_secret.get_secret_value()


class OidcLogin:
    """Starts and finishes browser logins at one OpenID Connect provider."""

    def __init__(self, settings: AuthSettings, tokens: OidcTokens | None = None) -> None:
        """Raises :class:`ValueError` without an issuer or client id, or for an http issuer."""
        if not settings.oidc_client_id:
            raise ValueError("set MICROPACS_AUTH__OIDC_CLIENT_ID for single sign-on")
        self._settings = settings
        self._tokens = tokens or OidcTokens(settings)
        self._secret = client_secret(settings)
        self._endpoints: Endpoints | None = None

    async def start(self, redirect_uri: str, next_path: str) -> tuple[str, Flow]:
        """The provider's authorization URL to send the browser to, and the flow to keep."""
        endpoints = await self.endpoints()
        flow = Flow(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),  # RFC 7636 4.1: 43 to 128 characters
            next=next_path,
        )
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoints.authorization,
                state=flow.state,
                code_verifier=flow.verifier,
                nonce=flow.nonce,
            )
        return str(url), flow

    async def finish(
        self, flow: Flow, state: str, code: str, redirect_uri: str, address: str = ""
    ) -> Principal:
        """The principal of the provider's answer to ``flow``; :class:`LoginFailed` if none."""
        if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise LoginFailed("the login's state does not match: start again")
        if not code:
            raise LoginFailed("the provider sent no authorization code")
        endpoints = await self.endpoints()
        try:
            async with self._client(redirect_uri) as client:
                token = await client.fetch_token(
                    endpoints.token,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=flow.verifier,
                )
        except OAuthError as exc:
            log.info("token endpoint refused the code", extra={"reason": exc.error})
            why = str(exc.error or "")[:64]
            raise LoginFailed(f"the provider refused the login ({why}): log in again") from exc
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("token endpoint failed", extra={"reason": type(exc).__name__})
            raise ProviderUnavailable("the provider's token endpoint failed") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed("the provider sent no ID token")
        claims = await self._tokens.claims(id_token, self._settings.oidc_client_id, address)
        if claims is None:
            raise LoginFailed("the provider's ID token is not valid")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), flow.nonce.encode()
        ):
            raise LoginFailed("the ID token is not this login's (nonce)")
        role: Role | None = self._tokens.role_of(claims)
        if role is None:
            raise NoRole("your account has no micropacs role: ask an administrator")
        return Principal(name=str(claims["sub"]), role=role, via="oidc")

    async def endpoints(self) -> Endpoints:
        """The provider's endpoints, from its discovery document (fetched once)."""
        if self._endpoints is None:
            self._endpoints = await self._discover()
        return self._endpoints

    async def _discover(self) -> Endpoints:
        issuer = self._settings.oidc_issuer
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                answer = await client.get(issuer.rstrip("/") + DISCOVERY)
                answer.raise_for_status()
                document = answer.json() if len(answer.content) <= MAX_DOCUMENT else None
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("provider discovery failed", extra={"reason": type(exc).__name__})
            raise ProviderUnavailable("the provider's discovery document is unavailable") from exc
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            raise ProviderUnavailable("the provider's discovery document names another issuer")
        authorization = document.get("authorization_endpoint")
        token = document.get("token_endpoint")
        for url in (authorization, token):
            if not isinstance(url, str) or not secure_url(url):
                raise ProviderUnavailable("the provider's endpoints are missing or not https")
        assert isinstance(authorization, str) and isinstance(token, str)
        return Endpoints(authorization=authorization, token=token)

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._settings.oidc_client_id,
            client_secret=self._secret or None,
            token_endpoint_auth_method="client_secret_basic" if self._secret else "none",
            scope=self._settings.oidc_scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=TIMEOUT,
        )
