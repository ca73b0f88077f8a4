"""OpenID Connect bearer tokens, validated against the identity provider's keys.

The provider's signing keys come from its JWKS (found through
``<issuer>/.well-known/openid-configuration`` unless a JWKS URL is set) and
are cached; a token is accepted when its signature, issuer, audience and
expiry check out (RFC 7519, OpenID Connect Core 3.1.3.7) and one of its roles
claim's values names a micropacs role.

The issuer, its discovery document's ``jwks_uri`` and a configured JWKS URL
must be ``https`` (RFC 8414 2, OpenID Connect Discovery 3), except on a
loopback host; the document's ``issuer`` must be the configured one exactly
(Discovery 4.3). A discovery that fails is not retried for
:data:`RETRY_DISCOVERY` seconds: every token is refused meanwhile without a
request to the provider. Key fetches run on the bounded credential-check pool
(:mod:`micropacs.auth.throttle`); PyJWT refetches the JWKS for an unknown key
id at most once per cooldown (30 s).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import urllib.parse
import urllib.request
from typing import Any, Final

import jwt

from micropacs.auth.principal import Principal, Role
from micropacs.auth.throttle import ChecksBusy, Verifier, shared_verifier
from micropacs.config import AuthSettings

log = logging.getLogger(__name__)

DISCOVERY = "/.well-known/openid-configuration"
RETRY_DISCOVERY: Final = 30.0
"""Seconds during which a failed discovery is not tried again."""


def secure_url(url: str) -> bool:
    """Whether ``url`` is https, or http to a loopback host (a provider on this machine)."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


class OidcTokens:
    """Checks bearer tokens of one OpenID Connect provider."""

    def __init__(self, settings: AuthSettings, verifier: Verifier | None = None) -> None:
        """Raises :class:`ValueError` for an issuer or JWKS URL that is not https."""
        for url in (settings.oidc_issuer, settings.oidc_jwks_url):
            if url and not secure_url(url):
                raise ValueError(f"use an https URL for the OpenID Connect provider, not {url}")
        if not settings.oidc_issuer:
            raise ValueError("set MICROPACS_AUTH__OIDC_ISSUER for the oidc backend")
        self._settings = settings
        self._verifier = verifier or shared_verifier()
        self._keys: jwt.PyJWKClient | None = None
        self._lock = asyncio.Lock()
        self._failed_until = 0.0

    async def principal(self, token: str, address: str = "") -> Principal | None:
        """The principal of a valid token, or None.

        Raises :class:`~micropacs.auth.throttle.ChecksBusy` when the credential-check
        pool may not take one more key lookup.
        """
        claims = await self.claims(token, self._settings.oidc_audience, address)
        role = None if claims is None else self.role_of(claims)
        if claims is None or role is None:
            return None
        return Principal(name=str(claims["sub"]), role=role, via="oidc")

    async def claims(self, token: str, audience: str, address: str = "") -> dict[str, Any] | None:
        """The claims of a token of this provider for ``audience`` (an access token's, or
        the client id for an ID token), or None when its signature, issuer, audience or
        expiry does not check out. Raises :class:`ChecksBusy` like :meth:`principal`."""
        try:
            keys = await self._key_client()
            # Keyed by the address alone: a token names no user before it is checked.
            key = await self._verifier.run(
                ("", address), lambda: keys.get_signing_key_from_jwt(token)
            )
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self._settings.oidc_algorithms,
                audience=audience,
                issuer=self._settings.oidc_issuer,
                leeway=self._settings.oidc_leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except ChecksBusy:
            raise
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            log.info("bearer token refused", extra={"reason": type(exc).__name__})
            return None
        return claims

    def role_of(self, claims: dict[str, Any]) -> Role | None:
        """The highest micropacs role named in the configured roles claim, or None."""
        value: Any = claims
        for part in self._settings.oidc_roles_claim.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        prefix = self._settings.oidc_role_prefix
        found = [
            Role(text.removeprefix(prefix))
            for text in values
            if isinstance(text, str)
            and text.startswith(prefix)
            and text.removeprefix(prefix) in set(Role)
        ]
        return max(found, key=lambda role: role.rank) if found else None

    async def _key_client(self) -> jwt.PyJWKClient:
        async with self._lock:  # one discovery at a time, not one per waiting request
            if self._keys is not None:
                return self._keys
            if time.monotonic() < self._failed_until:
                raise ValueError("the provider's discovery failed moments ago")
            try:
                url = self._settings.oidc_jwks_url or await self._verifier.run(
                    ("", "discovery"), self._discover
                )
            except (OSError, ValueError):
                self._failed_until = time.monotonic() + RETRY_DISCOVERY
                raise
            self._keys = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)
            return self._keys

    def _discover(self) -> str:
        configured = self._settings.oidc_issuer
        url = configured.rstrip("/") + DISCOVERY
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - checked https
            document = json.loads(answer.read(1 << 20))
        if not isinstance(document, dict) or document.get("issuer") != configured:
            raise ValueError("the provider's discovery document names another issuer")
        jwks = document.get("jwks_uri")
        if not isinstance(jwks, str):
            raise ValueError("the provider's discovery document names no jwks_uri")
        if not secure_url(jwks):
            raise ValueError("the provider's jwks_uri is not https")
        return jwks
