"""The budget, hypothesis profiles and tally of the fuzz targets, and the PACS they attack.

Two hypothesis profiles, neither with an example database (nothing is
written into the repository):

- ``fuzz``, the short run of every ``pytest``: :data:`SHORT_EXAMPLES` inputs
  per unit of a target's weight, derandomized so that CI sees the same inputs
  every time (the long run is where new ones are found);
- ``long``, chosen when ``MICROPACS_FUZZ_EXAMPLES`` is set (``make fuzz``):
  that many inputs per unit of weight, random.

Hypothesis remembers every input of a run so as not to repeat one, which
grows without bound; a long target runs in rounds of at most :data:`ROUND`
inputs, each a fresh run. Every input is timed (not the checks a target runs
between inputs, which bound their own waits): one taking more than
:data:`SLOW_INPUT` seconds fails its target (a hang, or worse than linear; the
message gives the CPU seconds the process spent meanwhile, which tell a
process starved on a loaded machine from one at work),
and a target whose run raises the process's peak RSS by more than
:data:`MEMORY_LIMIT_MB` fails too. The number of inputs each target ran, and
its slowest, are printed at the end of the session.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.conftest import Running, service_settings

T = TypeVar("T")

EXAMPLES_VARIABLE = "MICROPACS_FUZZ_EXAMPLES"
SHORT_EXAMPLES = 400
"""Inputs per unit of weight in the short run of ``pytest``."""
ROUND = 20_000
"""The most inputs one hypothesis run is given."""
SLOW_INPUT = 15.0
"""Seconds one input may take: far beyond any parser's linear time on these sizes."""
MEMORY_LIMIT_MB = 256
"""How much a target's run may raise the process's peak RSS (inputs are at most ~1 MiB)."""

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "fuzz",
    database=None,
    deadline=None,
    derandomize=True,
    max_examples=SHORT_EXAMPLES,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "long",
    database=None,
    deadline=None,
    derandomize=False,
    max_examples=ROUND,
    suppress_health_check=_QUIET,
    print_blob=True,
)


def per_weight() -> int:
    """Inputs per unit of weight: ``MICROPACS_FUZZ_EXAMPLES``, or the short run's."""
    return int(os.environ.get(EXAMPLES_VARIABLE) or SHORT_EXAMPLES)


def is_long() -> bool:
    """Whether this is the long run of ``make fuzz``."""
    return bool(os.environ.get(EXAMPLES_VARIABLE))


@dataclass
class Tally:
    """What one target ran: inputs, time, and its slowest input."""

    inputs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    slowest_input: str = ""


TALLIES: dict[str, Tally] = {}


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fuzz(
    target: str,
    strategy: st.SearchStrategy[T],
    check: Callable[[T], None],
    weight: float = 1.0,
    after: Callable[[], None] | None = None,
) -> Tally:
    """Run ``check`` on ``weight`` × :func:`per_weight` inputs drawn from ``strategy``.

    ``check`` asserts what the parser must do with one input; an exception it
    lets through is a failure, shrunk and reported by hypothesis. ``after``, if
    given, runs after each input, outside its time: the target's own checks of
    the system under test, whose waits are not the input's.
    """
    tally = TALLIES.setdefault(target, Tally())

    def timed(value: T) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        check(value)
        elapsed = time.perf_counter() - start
        spent = time.process_time() - cpu
        tally.inputs += 1
        tally.seconds += elapsed
        if elapsed > tally.slowest:
            tally.slowest, tally.slowest_input = elapsed, repr(value)[:300]
        assert elapsed < SLOW_INPUT, (
            f"{target}: one input took {elapsed:.1f} s ({spent:.1f} s of CPU in this process)"
        )
        if after is not None:
            after()

    profile = settings.get_profile("long" if is_long() else "fuzz")
    total = max(1, round(per_weight() * weight))
    before = peak_rss_mb()
    done = 0
    # Each bad input is logged (pynetdicom logs tracebacks); pytest would keep every
    # record of the test in memory, which is not the parser's memory.
    logging.disable(logging.CRITICAL)
    try:
        while done < total:
            count = min(ROUND, total - done)
            settings(profile, max_examples=count)(given(strategy)(timed))()
            done += count
    finally:
        logging.disable(logging.NOTSET)
    grown = peak_rss_mb() - before
    assert grown < MEMORY_LIMIT_MB, f"{target}: peak RSS grew {grown:.0f} MB"
    return tally


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The number of inputs each target ran, its slowest and the total."""
    if not TALLIES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz inputs")
    write(f"{'target':<34} {'inputs':>10} {'seconds':>9} {'slowest ms':>11}")
    for name, tally in sorted(TALLIES.items()):
        write(f"{name:<34} {tally.inputs:>10,} {tally.seconds:>9.1f} {tally.slowest * 1000:>11.2f}")
    write(f"{'total':<34} {sum(t.inputs for t in TALLIES.values()):>10,}")
    if is_long():
        for name, tally in sorted(TALLIES.items()):
            write(f"slowest input of {name}: {tally.slowest_input}")


@pytest.fixture(scope="module")
def fuzz_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """ingest, qr and index in this process (as ``tests/service`` builds them), for a module."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    running = Running(service_settings(data_dir))
    try:
        yield running
    finally:
        running.close()
