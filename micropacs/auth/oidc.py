"""OpenID Connect bearer tokens, validated against the identity provider's keys.

The provider's signing keys come from its JWKS (found through
``<issuer>/.well-known/openid-configuration`` unless a JWKS URL is set) and
are cached; a token is accepted when its signature, issuer, audience and
expiry check out (RFC 7519, OpenID Connect Core 3.1.3.7) and one of its roles
claim's values names a micropacs role.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from typing import Any

import jwt

from micropacs.auth.principal import Principal, Role
from micropacs.config import AuthSettings

log = logging.getLogger(__name__)

DISCOVERY = "/.well-known/openid-configuration"


class OidcTokens:
    """Checks bearer tokens of one OpenID Connect provider."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._keys: jwt.PyJWKClient | None = None

    async def principal(self, token: str) -> Principal | None:
        """The principal of a valid token, or None."""
        try:
            keys = await self._key_client()
            key = await asyncio.to_thread(keys.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self._settings.oidc_algorithms,
                audience=self._settings.oidc_audience,
                issuer=self._settings.oidc_issuer,
                leeway=self._settings.oidc_leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            log.info("bearer token refused", extra={"reason": type(exc).__name__})
            return None
        role = self._role(claims)
        if role is None:
            return None
        return Principal(name=str(claims["sub"]), role=role, via="oidc")

    def _role(self, claims: dict[str, Any]) -> Role | None:
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
        if self._keys is None:
            url = self._settings.oidc_jwks_url or await asyncio.to_thread(self._discover)
            self._keys = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)
        return self._keys

    def _discover(self) -> str:
        issuer = self._settings.oidc_issuer.rstrip("/")
        with urllib.request.urlopen(issuer + DISCOVERY, timeout=10) as answer:  # noqa: S310
            document = json.loads(answer.read(1 << 20))
        jwks = document.get("jwks_uri") if isinstance(document, dict) else None
        if not isinstance(jwks, str):
            raise ValueError("the provider's discovery document names no jwks_uri")
        return jwks
