"""Local credentials: API tokens and users, kept hashed in the Catalog.

An API token is ``mpt_<id>.<secret>``: the id names it (``micropacs tokens
list``, ``remove``), the secret is 256 random bits shown once and stored as
its SHA-256 (a token is no password: a fast hash of a random secret is
enough, and keeps every request cheap). A user's password is stored as an
argon2id hash (pwdlib); verifying one costs tens of milliseconds and tens of
MiB, so a successful check is remembered for a minute (forgotten at once when
the password changes), keyed by a digest, never the password itself.
Verifications run on the bounded, rate-limited pool of
:mod:`micropacs.auth.throttle`. A name that is no user (or an expired or
roleless one) is verified against a hash of a random password all the same,
so that the answer takes as long as for a user: no oracle of user names.
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
from micropacs.auth.throttle import Verifier, shared_verifier
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

    def __init__(self, catalog: Catalog, verifier: Verifier | None = None) -> None:
        self._catalog = catalog
        self._hasher = PasswordHash.recommended()
        self._verifier = verifier or shared_verifier()
        self._remembered: dict[tuple[str, str], float] = {}
        self._dummy: str | None = None

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

    async def user_principal(self, name: str, password: str, address: str = "") -> Principal | None:
        """The principal of a user name and password, or None if they do not match.

        ``address`` is the client's, for the back-off after failures; raises
        :class:`~micropacs.auth.throttle.ChecksBusy` (or ``TooManyFailures``) instead of
        checking when the verifier may not take one more.
        """
        credential = await self._catalog.credential(USER, name)
        role = None if credential is None or _expired(credential) else _role(credential)
        stored = credential.secret_hash if credential is not None and role is not None else None
        digest = hashlib.sha256(((stored or "") + password).encode()).hexdigest()
        if role is not None and self._remembered.get((name, digest), 0.0) > time.monotonic():
            return Principal(name=name, role=role, via=USER)
        key = (name, address)
        matched = await self._verifier.run(key, lambda: self._verify(password, stored))
        if not matched or role is None:
            self._verifier.failed(key)
            return None
        self._verifier.succeeded(key)
        self._forget_old()
        self._remembered[(name, digest)] = time.monotonic() + REMEMBER_SECONDS
        return Principal(name=name, role=role, via=USER)

    def _verify(self, password: str, stored: str | None) -> bool:
        """argon2 verification, in the verifier's thread; without a hash, against a dummy."""
        if stored is not None:
            return bool(self._hasher.verify(password, stored))
        if self._dummy is None:
            self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._hasher.verify(password, self._dummy)
        return False

    def _forget_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, until in self._remembered.items() if until <= now]:
            del self._remembered[key]
