"""pynetdicom's two reactor loops woken by what they wait for, not by a 1 ms clock.

Every pynetdicom 3.0.4 association runs two threads that poll: the DUL
reactor (PS3.8's state machine and the socket) sleeps 1 ms whenever a pass
found nothing to do, and the association reactor (DIMSE messages to the
handlers) sleeps 1 ms before every pass. Four idle-looking associations so
cost thousands of wake-ups a second, each a pass through Python under the
GIL, and every PDU waits for the next tick of both clocks on its way in
and out: the profile of a C-STORE load put more of the server's CPU in these
loops than in storing (docs/architecture.md, "The receive path").

:func:`install` (once per process) keeps both loops and everything they
call, and changes only how they wait:

- the DUL reactor, when a pass found nothing, blocks in ``select`` on the
  association's socket and on a wake-up socket pair, which the queues it
  serves (``event_queue``, ``to_provider_queue``) signal on every put, as do
  ``kill_dul`` and ``stop_dul``; the wait is bounded by the ARTIM timer and
  by :data:`LONGEST_WAIT`;
- the association reactor waits on an event that its DIMSE message queue and
  the DUL's ``to_user_queue`` set on every put, as do ``kill`` and the DUL
  thread's end, bounded by :data:`LONGEST_WAIT` (the network idle timer is
  checked at least that often). It waits *paused* (``_is_paused``), so a
  thread that sends a request on the association (``send_c_store`` …) goes
  ahead at once instead of spinning until the reactor's next pass.

A pass that did something is followed by another pass at once, as before.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

LONGEST_WAIT: Final = 0.05
"""Seconds a reactor waits without a signal before it looks again (timers, flags)."""

_dul_log = logging.getLogger("pynetdicom.dul")
_ASSOC_WAKE = "_micropacs_wake"
_DUL_WAKE = "_micropacs_wake_pair"

_dul_init = DULServiceProvider.__init__
_dimse_init = DIMSEServiceProvider.__init__
_assoc_init = Association.__init__
_kill_dul = DULServiceProvider.kill_dul
_stop_dul = DULServiceProvider.stop_dul
_assoc_kill = Association.kill

_installed = threading.Lock()
_done = False


class SignallingQueue(queue.Queue[Any]):
    """A queue that calls ``signal`` after every put (under its lock, so cheaply)."""

    def __init__(self, signal: Callable[[], None]) -> None:
        super().__init__()
        self._signal = signal

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._signal()


class WakePair:
    """A socket pair one thread's ``select`` watches and any thread may poke.

    Opened by the reactor when it starts and closed when it ends, so a DUL
    never started holds no descriptors; pokes before or after are no-ops."""

    def __init__(self) -> None:
        self.reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._lock = threading.Lock()
        self.waiting = False
        """Whether the reactor may be in (or about to enter) its ``select``: pokes
        while it is busy would only cost a send and a drain each."""

    def open(self) -> None:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        with self._lock:
            self.reader, self._writer = reader, writer

    def poke(self) -> None:
        writer = self._writer
        if writer is None or not self.waiting:
            return
        with contextlib.suppress(OSError):  # full (already poked) or closed meanwhile
            writer.send(b"\0")

    def drain(self) -> None:
        reader = self.reader
        if reader is None:
            return
        with contextlib.suppress(OSError):
            while reader.recv(4096):
                pass

    def close(self) -> None:
        with self._lock:
            reader, writer = self.reader, self._writer
            self.reader = self._writer = None
        for end in (reader, writer):
            if end is not None:
                end.close()


def _wake_of(assoc: Association) -> threading.Event:
    wake: threading.Event = getattr(assoc, _ASSOC_WAKE)
    return wake


def _assoc_created(self: Association, *args: Any, **kwargs: Any) -> None:
    # Before pynetdicom's __init__, which builds the DUL and DIMSE providers.
    setattr(self, _ASSOC_WAKE, threading.Event())
    _assoc_init(self, *args, **kwargs)


def _dul_created(self: DULServiceProvider, assoc: Association) -> None:
    _dul_init(self, assoc)
    pair = WakePair()
    setattr(self, _DUL_WAKE, pair)
    self.event_queue = SignallingQueue(pair.poke)
    self.to_provider_queue = SignallingQueue(pair.poke)
    self.to_user_queue = SignallingQueue(_wake_of(assoc).set)


def _dimse_created(self: DIMSEServiceProvider, assoc: Association) -> None:
    _dimse_init(self, assoc)
    self.msg_queue = SignallingQueue(_wake_of(assoc).set)


def _pair_of(dul: DULServiceProvider) -> WakePair:
    pair: WakePair = getattr(dul, _DUL_WAKE)
    return pair


def _dul_wait(dul: DULServiceProvider, pair: WakePair) -> None:
    """Block until the socket is readable, a queue was put to, or a timer is due."""
    timeout = LONGEST_WAIT
    artim = dul.artim_timer
    if artim._start_time is not None and artim._end_time is None:  # running
        timeout = max(0.0, min(timeout, artim.remaining))
    watched: list[Any] = [pair.reader] if pair.reader is not None else []
    raw = dul.socket.socket if dul.socket is not None else None
    if raw is not None and raw.fileno() >= 0 and getattr(dul.socket, "_is_connected", False):
        watched.append(raw)
    if not watched:
        time.sleep(timeout)
        return
    # Waiting first, then looking: a put either lands before the look or sees us waiting.
    pair.waiting = True
    try:
        if dul._kill_thread or dul.to_provider_queue.qsize() or dul.event_queue.qsize():
            return
        select.select(watched, [], [], timeout)
    except (OSError, ValueError):
        return  # the socket closed meanwhile: the next pass sees it
    finally:
        pair.waiting = False
    pair.drain()


def run_dul_reactor(self: DULServiceProvider) -> None:
    """pynetdicom's ``DULServiceProvider.run_reactor``, waiting as the module says."""
    pair = _pair_of(self)
    pair.open()
    try:
        _dul_loop(self, pair)
    finally:
        pair.close()
        _wake_of(self.assoc).set()  # the association reactor checks ``dul.is_alive()``


def _dul_loop(self: DULServiceProvider, pair: WakePair) -> None:
    self._idle_timer.start()
    idle = False
    while True:
        if not self.assoc._dul_ready.is_set():
            self.assoc._dul_ready.set()
        if idle:
            _dul_wait(self, pair)
        if self._kill_thread:
            break
        if self.artim_timer.expired:
            self.event_queue.put("Evt18")
        try:
            if self._process_recv_primitive():
                pass
            elif self._is_transport_event():
                self._idle_timer.restart()
        except Exception:  # noqa: BLE001 - as pynetdicom: abort, never die silently
            _abort_hard(self)
            return
        try:
            event = self.event_queue.get(block=False)
        except queue.Empty:
            idle = True
            continue
        self.state_machine.do_action(event)
        idle = False


def _abort_hard(dul: DULServiceProvider) -> None:
    """What pynetdicom's reactor does when a pass raises: A-ABORT, stop both reactors."""
    _dul_log.exception("Exception in DUL.run(), aborting association")
    abort = A_ABORT_RQ()
    abort.source = 0x02
    abort.reason_diagnostic = 0x00
    if dul.socket is not None:
        with contextlib.suppress(OSError):
            dul.socket.send(abort.encode())
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True
    dul._kill_thread = True


def _kill_dul_and_wake(self: DULServiceProvider) -> None:
    _kill_dul(self)
    _pair_of(self).poke()


def _stop_dul_and_wake(self: DULServiceProvider) -> bool:
    _pair_of(self).poke()
    return bool(_stop_dul(self))


def _kill_assoc_and_wake(self: Association) -> None:
    _wake_of(self).set()
    _assoc_kill(self)


def run_assoc_reactor(self: Association) -> None:
    """pynetdicom's ``Association._run_reactor`` (acceptor and requestor alike),
    waiting as the module says; C-STORE data sets received but never handled (the
    association ended first) are closed and deleted when it ends."""
    try:
        _assoc_loop(self)
    finally:
        _discard_undelivered(self)


def _discard_undelivered(assoc: Association) -> None:
    """Close and delete the files of received messages no handler will see; the rest
    (answers a requesting thread may still take) stay queued."""
    kept = []
    while True:
        try:
            item = assoc.dimse.msg_queue.get_nowait()
        except queue.Empty:
            break
        if getattr(item[1], "_dataset_file", None) is None:
            kept.append(item)
            continue
        _discard_file(item[1])
    for item in kept:
        assoc.dimse.msg_queue.put(item)


def _discard_file(primitive: Any) -> None:
    """Close and delete the file a received C-STORE data set is in, once no handler will
    read it (a no-op when pynetdicom's storage SCP already did, or the store moved it)."""
    stream = getattr(primitive, "_dataset_file", None)
    if stream is None:
        return
    with contextlib.suppress(OSError):
        stream.close()
        Path(stream.name).unlink(missing_ok=True)


def _assoc_loop(self: Association) -> None:
    wake = _wake_of(self)
    self._is_paused = False
    idle = False
    while not self._kill:
        self._is_paused = True
        if idle:
            wake.wait(LONGEST_WAIT)
        self._reactor_checkpoint.wait()
        self._is_paused = False
        if not self._reactor_checkpoint.is_set():
            # A sender cleared it after the wait and, seeing us still paused, went on:
            # the next message is its answer, not ours to take.
            continue
        wake.clear()  # before looking: a put from now on sets it again
        idle = True

        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            idle = False
            try:
                self._serve_request(msg, int(context_id))  # type: ignore[arg-type]
            finally:
                _discard_file(msg)  # pynetdicom's storage SCP did; a C-STORE elsewhere not

        if _ended(self):
            return


def _ended(self: Association) -> bool:
    """The release, abort, closed transport and idle timer checks of pynetdicom's loop."""
    if self.is_established and self.acse.is_release_requested():
        self.acse.send_release(is_response=True)
        self.is_released = True
        self.is_established = False
        evt.trigger(self, evt.EVT_RELEASED, {})
        self.kill()
        return True
    if self.acse.is_aborted():
        self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires for subscribers
        self.is_aborted = True
        self.is_established = False
        evt.trigger(self, evt.EVT_ABORTED, {})
        self.kill()
        return True
    if not self.dul.is_alive():
        self.kill()
        return True
    if self.dul.idle_timer_expired():
        if self.network_timeout_response == "A-RELEASE":
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self.release()
            self._is_paused = False
        else:
            self.abort()
        self.kill()
        return True
    return False


def install() -> None:
    """Replace how pynetdicom's reactors wait, once per process."""
    global _done
    with _installed:
        if _done:
            return
        Association.__init__ = _assoc_created  # type: ignore[method-assign]
        DULServiceProvider.__init__ = _dul_created  # type: ignore[method-assign]
        DIMSEServiceProvider.__init__ = _dimse_created  # type: ignore[method-assign]
        DULServiceProvider.run_reactor = run_dul_reactor  # type: ignore[method-assign]
        DULServiceProvider.kill_dul = _kill_dul_and_wake  # type: ignore[method-assign]
        DULServiceProvider.stop_dul = _stop_dul_and_wake  # type: ignore[method-assign]
        Association._run_reactor = run_assoc_reactor  # type: ignore[method-assign]
        Association.kill = _kill_assoc_and_wake  # type: ignore[method-assign]
        _done = True
