"""Password checks on a real SQLite catalog with real argon2: bounded, rate-limited, and as
costly for a name that is no user as for one that is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from micropacs.adapters.sqlite_catalog import SqliteCatalog
from micropacs.auth.local import LocalCredentials
from micropacs.auth.principal import Role
from micropacs.auth.throttle import FREE_FAILURES, ChecksBusy, TooManyFailures, Verifier

PASSWORD = "correct horse battery"


async def _credentials(folder: Path, verifier: Verifier) -> tuple[SqliteCatalog, LocalCredentials]:
    catalog = SqliteCatalog(folder / "catalog.db")
    await catalog.open()
    credentials = LocalCredentials(catalog, verifier)
    await credentials.set_user("jnovak", PASSWORD, Role.VIEWER)
    return catalog, credentials


def test_an_unknown_user_costs_a_verification_as_a_known_one_does(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        verifier = Verifier()
        catalog, credentials = await _credentials(tmp_path, verifier)
        counts = []
        try:
            for name in ("jnovak", "nobody", "jnovak"):
                assert await credentials.user_principal(name, "wrong password!", name) is None
                counts.append(verifier.checks)
            assert await credentials.user_principal("jnovak", PASSWORD, "a") is not None
            counts.append(verifier.checks)
        finally:
            await catalog.close()
        return counts

    assert asyncio.run(scenario()) == [1, 2, 3, 4]


def test_repeated_failures_of_one_name_and_address_must_wait(tmp_path: Path) -> None:
    async def scenario() -> None:
        verifier = Verifier()
        catalog, credentials = await _credentials(tmp_path, verifier)
        try:
            for _ in range(FREE_FAILURES):
                assert await credentials.user_principal("jnovak", "guess guess!", "x") is None
            with pytest.raises(TooManyFailures) as waiting:
                await credentials.user_principal("jnovak", PASSWORD, "x")
            assert waiting.value.retry_after > 0 and waiting.value.http == 429
            assert verifier.checks == FREE_FAILURES  # refused without a hash
            # The user, from elsewhere, is not locked out.
            assert await credentials.user_principal("jnovak", PASSWORD, "y") is not None
        finally:
            await catalog.close()

    asyncio.run(scenario())


def test_checks_beyond_the_pool_and_its_queue_are_refused_at_once(tmp_path: Path) -> None:
    async def scenario() -> list[object]:
        verifier = Verifier(workers=1, waiting=1)
        catalog, credentials = await _credentials(tmp_path, verifier)
        try:
            return await asyncio.gather(
                *(credentials.user_principal("jnovak", "nope nope nope", f"{i}") for i in range(4)),
                return_exceptions=True,
            )
        finally:
            await catalog.close()

    answers = asyncio.run(scenario())
    busy = [answer for answer in answers if isinstance(answer, ChecksBusy)]
    assert len(busy) == 2 and all(answer.http == 503 for answer in busy)
    assert [answer for answer in answers if answer not in busy] == [None, None]
