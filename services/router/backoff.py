"""How long the router waits before trying a failed send again (forwarding, IAN)."""

from __future__ import annotations

import random


def backoff(initial: float, longest: float, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failure in a row: doubling from ``initial``
    up to ``longest``, then between half and all of it (jitter, so routers and entries that
    failed together do not retry together)."""
    base = min(initial * 2 ** max(attempts - 1, 0), longest)
    return float(base * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret
