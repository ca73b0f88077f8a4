"""Local credentials: API tokens and users, kept hashed in the Catalog.

An API token is ``mpt_<id>.<secret>``: the id names it (``micropacs tokens
list``, ``remove``), the secret is 256 random bits shown once and stored as
its SHA-256 (a token is no password: a fast hash of a random secret is
enough, and keeps every request cheap). A user's password is stored as an
argon2id hash (pwdlib); verifying one costs tens of milliseconds and tens of
MiB, so a successful check is remembered for a minute (forgotten at once when
the password changes), keyed by a digest, never the password itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime, timedelta

from pwdlib import PasswordHash

from micropacs.auth.principal import Principal, Role
from micropacs.errors import InvalidInput
from micropacs.ports import Catalog, Credential

TOKEN = "token"  # noqa: S105 - a credential kind, no secret
USER = "user"
TOKEN_PATTERN = re.compile(r"mpt_([0-9a-f]{12})\.([A-Za-z0-9_-]{40,64})")
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
REMEMBER_SECONDS = 60.0
MIN_PASSWORD = 12


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _expired(credential: Credential) -> bool:
    if not credential.expires_at:
        return False
    return datetime.fromisoformat(credential.expires_at) <= datetime.now(UTC)


def _role(credential: Credential) -> Role | None:
    try:
        return Role(credential.role)
    except ValueError:
        return None


class LocalCredentials:
    """Creates, lists and checks API tokens and users."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._hasher = PasswordHash.recommended()
        self._remembered: dict[tuple[str, str], float] = {}

    async def create_token(
        self, role: Role, description: str = "", expires_in: timedelta | None = None
    ) -> tuple[str, Credential]:
        """A new token: the text to hand over (shown once) and what is stored."""
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        credential = Credential(
            kind=TOKEN,
            name=token_id,
            secret_hash=_digest(secret),
            role=role.value,
            description=description,
            expires_at=(now + expires_in).isoformat(timespec="seconds") if expires_in else "",
            created_at=now.isoformat(timespec="seconds"),
        )
        await self._catalog.put_credential(credential)
        return f"mpt_{token_id}.{secret}", credential

    async def set_user(self, name: str, password: str, role: Role, description: str = "") -> None:
        """Add a user or replace its password and role."""
        if not USER_NAME.fullmatch(name):
            raise InvalidInput("a user name has 1 to 64 letters, digits or . _ @ -")
        if len(password) < MIN_PASSWORD:
            raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters")
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        await self._catalog.put_credential(
            Credential(
                kind=USER,
                name=name,
                secret_hash=hashed,
                role=role.value,
                description=description,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        )

    async def token_principal(self, presented: str) -> Principal | None:
        """The principal of a presented API token, or None if it is not a valid one."""
        match = TOKEN_PATTERN.fullmatch(presented)
        if match is None:
            return None
        token_id, secret = match.groups()
        credential = await self._catalog.credential(TOKEN, token_id)
        if credential is None or _expired(credential):
            return None
        if not hmac.compare_digest(credential.secret_hash, _digest(secret)):
            return None
        role = _role(credential)
        return None if role is None else Principal(name=token_id, role=role, via=TOKEN)

    async def user_principal(self, name: str, password: str) -> Principal | None:
        """The principal of a user name and password, or None if they do not match."""
        credential = await self._catalog.credential(USER, name)
        if credential is None or _expired(credential):
            return None
        role = _role(credential)
        if role is None:
            return None
        key = (name, hashlib.sha256((credential.secret_hash + password).encode()).hexdigest())
        if self._remembered.get(key, 0.0) > time.monotonic():
            return Principal(name=name, role=role, via=USER)
        if not await asyncio.to_thread(self._hasher.verify, password, credential.secret_hash):
            return None
        self._forget_old()
        self._remembered[key] = time.monotonic() + REMEMBER_SECONDS
        return Principal(name=name, role=role, via=USER)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, until in self._remembered.items() if until <= now]:
            del self._remembered[key]
