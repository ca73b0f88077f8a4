"""How the read barrier shares its readings between concurrent requests
(:class:`micropacs.read_barrier.Shared`)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from micropacs.read_barrier import Shared


class Counter:
    """Counts its calls; each call takes ``seconds`` and returns its number."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.calls = 0
        self.started: list[float] = []
        self.seconds = seconds

    async def __call__(self) -> int:
        self.calls += 1
        number = self.calls
        self.started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.seconds)
        return number


def test_concurrent_callers_share_one_call() -> None:
    async def scenario() -> tuple[list[int], int]:
        call = Counter()
        shared = Shared(call, 0.0)
        results = await asyncio.gather(*(shared.get() for _ in range(100)))
        await shared.close()
        return list(results), call.calls

    results, calls = asyncio.run(scenario())
    assert results == [1] * 100
    assert calls == 1


def test_a_caller_arriving_during_a_call_gets_the_next_one() -> None:
    """A reading begun before a request could miss what was acknowledged just before it."""

    async def scenario() -> tuple[int, int, int]:
        call = Counter()
        shared = Shared(call, 0.0)
        first = asyncio.create_task(shared.get())
        await asyncio.sleep(0.02)  # the first call is running
        late = await shared.get()
        result = await first
        await shared.close()
        return result, late, call.calls

    assert asyncio.run(scenario()) == (1, 2, 2)


def test_calls_begin_at_most_once_per_interval() -> None:
    async def scenario() -> list[float]:
        call = Counter(seconds=0.0)
        shared = Shared(call, 0.1)
        for _ in range(3):
            await shared.get()
        await shared.close()
        return call.started

    started = asyncio.run(scenario())
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert len(gaps) == 2 and min(gaps) >= 0.09


def test_a_failure_reaches_every_waiting_caller_and_the_next_call_is_made() -> None:
    async def scenario() -> tuple[list[BaseException | int], int]:
        calls = 0

        async def flaky() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.01)
            if calls == 1:
                raise ConnectionError("bus down")
            return calls

        shared = Shared(flaky, 0.0)
        failed = await asyncio.gather(*(shared.get() for _ in range(3)), return_exceptions=True)
        again = await shared.get()
        await shared.close()
        return [*failed, again], calls

    results, calls = asyncio.run(scenario())
    assert [type(r) for r in results[:3]] == [ConnectionError] * 3
    assert results[3] == 2 and calls == 2


def test_a_caller_that_gives_up_leaves_the_call_to_the_others() -> None:
    async def scenario() -> tuple[int, int]:
        call = Counter(seconds=0.1)
        shared = Shared(call, 0.0)
        patient = asyncio.create_task(shared.get())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(shared.get(), 0.01)
        result = await patient
        await shared.close()
        return result, call.calls

    assert asyncio.run(scenario()) == (1, 1)
