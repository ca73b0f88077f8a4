"""A real OpenID Connect token issuer for the tests: discovery, JWKS and signed tokens.

It serves ``/.well-known/openid-configuration`` and its JWKS over HTTP on
loopback, as an identity provider does, and signs tokens with its own RSA
key; micropacs fetches and checks them as it would a real provider's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class TokenIssuer:
    """The issuer's URL and what it signs with."""

    url: str
    key: rsa.RSAPrivateKey
    key_id: str = "test-key-1"

    def token(
        self,
        *,
        audience: str = "micropacs",
        roles: list[str] | None = None,
        lifetime: float = 300,
        key: rsa.RSAPrivateKey | None = None,
        issuer: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": issuer or self.url,
            "aud": audience,
            "sub": "dr.novak",
            "iat": now,
            "exp": now + int(lifetime),
            "roles": roles if roles is not None else ["viewer"],
            **claims,
        }
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": self.key_id})


@contextmanager
def token_issuer() -> Iterator[TokenIssuer]:
    """An issuer listening on a free loopback port for the duration of the block."""
    key = new_key()
    state: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body: Any = {"issuer": state["url"], "jwks_uri": state["url"] + "/jwks"}
            elif self.path == "/jwks":
                public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
                body = {"keys": [{**public, "kid": "test-key-1", "use": "sig", "alg": "RS256"}]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield TokenIssuer(url=state["url"], key=key)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
