"""OpenID Connect provider checks against the real test issuer (tests/integration)."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest

from micropacs.auth.oidc import OidcTokens, secure_url
from micropacs.config import AuthSettings
from tests.integration.token_issuer import token_issuer


@pytest.mark.parametrize(
    ("url", "secure"),
    [
        ("https://idp.example/realms/pacs", True),
        ("http://idp.example/realms/pacs", False),
        ("http://127.0.0.1:8080/realms/pacs", True),
        ("http://[::1]:8080", True),
        ("http://localhost:8080", True),
        ("http://127.0.0.1.evil.example", False),
        ("file:///etc/passwd", False),
    ],
)
def test_only_https_or_loopback_providers(url: str, secure: bool) -> None:
    assert secure_url(url) is secure
    settings = AuthSettings(backend="oidc", oidc_issuer=url, oidc_audience="micropacs")
    if secure:
        OidcTokens(settings)
    else:
        with pytest.raises(ValueError, match="https"):
            OidcTokens(settings)


def test_a_discovery_document_of_another_issuer_is_refused() -> None:
    with token_issuer() as issuer:
        # The same server under another name: its document names 127.0.0.1, not localhost.
        port = urllib.parse.urlsplit(issuer.url).port
        configured = f"http://localhost:{port}"
        settings = AuthSettings(backend="oidc", oidc_issuer=configured, oidc_audience="micropacs")
        token = issuer.token(issuer=configured, roles=["viewer"])
        assert asyncio.run(OidcTokens(settings).principal(token)) is None
        genuine = AuthSettings(backend="oidc", oidc_issuer=issuer.url, oidc_audience="micropacs")
        accepted = asyncio.run(OidcTokens(genuine).principal(issuer.token(roles=["viewer"])))
        assert accepted is not None and accepted.name == "dr.novak"
