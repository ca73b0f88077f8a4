"""Stored instances opened on the service's loop a batch ahead of their sending over DIMSE.

pynetdicom sends C-STOREs one by one from a thread: a C-GET's or C-MOVE's
sub-operations (PS3.4 C.4.2.2, C.4.3.2) from the association's thread, a
forwarded queue's entries from its destination's sender. Each needs a local
file from an async store. Crossing to the loop twice per instance (open, then release)
costs a loop wake-up and a task each way, and the thread waits for the loop
between sub-operations. :class:`OpenedAhead` crosses once per batch (at most
:data:`BATCH_COUNT` instances or :data:`BATCH_BYTES`, at least one instance):
the next batch is opened on the loop while the current one is sent, and a
batch is released once the thread has moved past it. At most two batches are
held at a time, so the local copies a remote store makes stay bounded.

An instance that cannot be opened fails its own sub-operation only: its error
is raised when the thread asks for it, as if it had been opened then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Coroutine, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    nullcontext,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from micropacs.bridge import LoopBridge
from micropacs.ports import InstanceLocation

log = logging.getLogger(__name__)

BATCH_COUNT: Final = 32
"""Instances opened by one crossing to the loop."""
BATCH_BYTES: Final = 64 << 20
"""Stored bytes opened by one crossing to the loop (a larger instance goes alone)."""

T = TypeVar("T")
Opener = Callable[[InstanceLocation], AbstractAsyncContextManager[Path]]


@dataclass(frozen=True)
class _Batch:
    start: int
    """The index in the plan of its first instance."""
    opened: list[Path | Exception]
    stack: AsyncExitStack

    def holds(self, index: int) -> bool:
        return self.start <= index < self.start + len(self.opened)


class OpenedAhead:
    """The local files of ``locations`` for the one thread that sends them in that order.

    Call :meth:`open` for each location as it is sent (another location, or one
    out of order, is opened alone), then :meth:`close` once.
    """

    def __init__(
        self,
        bridge: LoopBridge,
        locations: Sequence[InstanceLocation],
        opener: Opener,
        *,
        count: int = BATCH_COUNT,
        size: int = BATCH_BYTES,
    ) -> None:
        self._bridge = bridge
        self._locations = locations
        self._opener = opener
        self._count = max(1, count)
        self._size = size
        self._cursor = 0
        """The index of the location the thread should ask for next."""
        self._submitted = 0
        """The index of the first location no batch was asked for yet."""
        self._current: _Batch | None = None
        self._ahead: concurrent.futures.Future[_Batch] | None = None
        self._releasing: list[concurrent.futures.Future[None]] = []

    def open(self, location: InstanceLocation) -> AbstractContextManager[Path]:
        """A local file with the bytes of ``location``, held until its batch is released."""
        index = self._cursor
        if index >= len(self._locations) or self._locations[index] is not location:
            return self._bridge.enter(self._opener(location))
        self._cursor += 1
        if self._current is None or not self._current.holds(index):
            self._advance()
        assert self._current is not None
        opened = self._current.opened[index - self._current.start]
        if isinstance(opened, Exception):
            raise opened
        return nullcontext(opened)

    def close(self) -> None:
        """Release every batch, opened or being opened, and wait until they are."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            self._release(ahead.result())
        if self._current is not None:
            current, self._current = self._current, None
            self._release(current)
        releasing, self._releasing = self._releasing, []
        for future in releasing:
            try:
                future.result()
            except Exception:
                log.exception("releasing the local files of a retrieval failed")

    def _advance(self) -> None:
        if self._current is not None:
            current, self._current = self._current, None
            self._release(current)
        ahead, self._ahead = self._ahead or self._next_batch(), None
        self._current = ahead.result()
        if self._submitted < len(self._locations):
            self._ahead = self._next_batch()  # opened while this one is sent

    def _next_batch(self) -> concurrent.futures.Future[_Batch]:
        start = end = self._submitted
        size = 0
        while end < len(self._locations) and end - start < self._count:
            size += self._locations[end].size
            if end > start and size > self._size:
                break
            end += 1
        self._submitted = end
        return self._submit(self._open(start, end))

    def _release(self, batch: _Batch) -> None:
        self._releasing.append(self._submit(batch.stack.aclose()))

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._bridge.loop)

    async def _open(self, start: int, end: int) -> _Batch:
        stack = AsyncExitStack()
        opened: list[Path | Exception] = []
        try:
            for location in self._locations[start:end]:
                try:
                    opened.append(await stack.enter_async_context(self._opener(location)))
                except Exception as exc:  # noqa: BLE001 - raised in the thread, for this one
                    opened.append(exc)
        except BaseException:
            await stack.aclose()
            raise
        return _Batch(start, opened, stack)
