"""Credential checks bounded in CPU, memory and rate.

A password check (argon2id, t=3, 64 MiB, p=4) costs tens of milliseconds of
CPU and 64 MiB; a token check may fetch the provider's keys. So they run on
a pool of their own (:data:`WORKERS` threads), never on the event loop's
default executor that the catalog, the file store, ingest and retrieval
share, and at most :data:`WAITING` more checks wait for it: one beyond that
is refused at once with :class:`ChecksBusy` (HTTP 503 with ``Retry-After``,
a DICOM association rejected transient), so a flood of wrong passwords
costs at most ``WORKERS`` hashes of CPU and memory at a time.

After :data:`FREE_FAILURES` failed checks in a row for one (user name,
client address), that pair waits a back-off doubling from one second up to
:data:`MAX_BACKOFF` before its next check, refused meanwhile with
:class:`TooManyFailures` (HTTP 429). At most :data:`TRACKED` pairs are
remembered, the oldest forgotten first; a success forgets its pair.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Final, TypeVar

from micropacs.errors import Unavailable

T = TypeVar("T")

WORKERS: Final = 2
"""Credential checks running at once per process."""
WAITING: Final = 6
"""Credential checks waiting for a worker; one more is refused."""
FREE_FAILURES: Final = 3
"""Failures in a row of one (name, address) before it must wait."""
MAX_BACKOFF: Final = 60.0
"""Longest wait, in seconds, imposed on one (name, address)."""
TRACKED: Final = 10_000
"""(name, address) pairs whose failures are remembered."""


class ChecksBusy(Unavailable):
    """Too many credential checks are in progress; the same request may succeed shortly."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which to try again (the ``Retry-After`` header, RFC 9110 10.2.3)."""


class TooManyFailures(ChecksBusy):
    """One user name from one address failed too often: it must wait before trying again."""

    http = HTTPStatus.TOO_MANY_REQUESTS


class Verifier:
    """Runs blocking credential checks on its own small pool, bounded and rate-limited.

    Call :meth:`run` from the event loop only (the HTTP gate, or a DICOM
    association through the loop bridge): its counters are the loop's.
    """

    def __init__(self, workers: int = WORKERS, waiting: int = WAITING) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="credential-check")
        self._capacity = workers + waiting
        self._in_flight = 0
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self.checks = 0
        """Checks run to completion since start (what a test counts)."""

    async def run(self, key: tuple[str, str], check: Callable[[], T]) -> T:
        """Run ``check`` on the pool for ``key`` (user name, client address).

        Raises :class:`TooManyFailures` while ``key`` must wait, :class:`ChecksBusy`
        when the pool and its queue are full; neither runs ``check``.
        """
        failed = self._failures.get(key)
        if failed is not None:
            wait = failed[1] - time.monotonic()
            if wait > 0:
                raise TooManyFailures("too many failed attempts: wait", retry_after=wait)
        if self._in_flight >= self._capacity:
            raise ChecksBusy("too many credential checks in progress", retry_after=1.0)
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, check)
        finally:
            self._in_flight -= 1
            self.checks += 1

    def failed(self, key: tuple[str, str]) -> None:
        """Count a failed check of ``key``; past :data:`FREE_FAILURES` it must wait."""
        count = self._failures.pop(key, (0, 0.0))[0] + 1
        wait = 0.0 if count < FREE_FAILURES else min(2.0 ** (count - FREE_FAILURES), MAX_BACKOFF)
        self._failures[key] = (count, time.monotonic() + wait)
        while len(self._failures) > TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, key: tuple[str, str]) -> None:
        """Forget the failures of ``key``."""
        self._failures.pop(key, None)


_shared: Verifier | None = None
_shared_lock = threading.Lock()


def shared_verifier() -> Verifier:
    """The process's verifier, made on first use, so that HTTP and DICOM share one bound."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Verifier()
        return _shared
