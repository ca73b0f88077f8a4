"""DICOM connections handed from the parent to the least busy worker process.

With ``SO_REUSEPORT`` the kernel spreads connections over the processes
listening on a port by a hash of each connection, not by their load: four
storescu associations over four processes often put two or three on one
process and none on another, and `--workers` measured anything from 0.65x to
1.7x of one process between runs (docs/architecture.md). Here the parent
alone listens on the DICOM port; each accepted connection goes to the process
(a worker, or the parent itself) with the fewest open connections it handed
out, as a file descriptor over a Unix socket pair (``SCM_RIGHTS``), before a
byte of it is read. A worker answers one byte on the same socket pair when a
connection it was handed closes.

TLS connections are not handed over (their handshake would have to move
with them): the TLS port stays shared with ``SO_REUSEPORT``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, Final

from pynetdicom import evt

log = logging.getLogger(__name__)

HANDOFF_FD_ENV: Final = "MICROPACS_DICOM_HANDOFF_FD"
"""The environment variable naming a worker's end of its socket pair (internal)."""

STARTING_SECONDS: Final = 60.0
"""How long a connection waits for workers still starting."""
_CLOSED: Final = b"\x01"
_READY: Final = b"\x02"
_NEVER: Final = 1 << 30
"""The count of a worker not ready, or gone: never the least busy."""
_ADDRESS_BYTES: Final = 512


class Dispatcher:
    """The parent's side: which process takes each new connection on the DICOM port."""

    def __init__(self, channels: list[socket.socket]) -> None:
        self._channels: list[socket.socket | None] = list(channels)
        # The workers' open connections, then the parent's own; a worker counts once ready.
        self._open = [_NEVER] * len(channels) + [0]
        self._mine: set[Any] = set()
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._waiting = len(channels)
        """Workers neither ready nor gone."""
        for number, channel in enumerate(channels):
            threading.Thread(
                target=self._follow, args=(number, channel), name="dicom-handoff", daemon=True
            ).start()

    def hand(self, connection: socket.socket, address: Any) -> bool:
        """Hand ``connection`` to the least busy worker and return True, or return False
        when the parent is the least busy (or no worker can take it) and keeps it.

        Until every worker is ready (or gone, at most :data:`STARTING_SECONDS`) the
        connection waits: the first associations after a start would otherwise all
        land on the parent."""
        with self._settled:
            self._settled.wait_for(lambda: self._waiting <= 0, STARTING_SECONDS)
        while True:
            with self._lock:
                target = min(range(len(self._open)), key=self._open.__getitem__)
                channel = self._channels[target] if target < len(self._channels) else None
                self._open[target] += 1
                if channel is None:
                    self._mine.add(connection)
                    return False
            try:
                socket.send_fds(
                    channel, [json.dumps(list(address)).encode()], [connection.fileno()]
                )
            except OSError:
                log.warning("a DICOM worker cannot take connections: handing to the others")
                self._lost(target)
                continue
            connection.close()  # the worker holds its own descriptor now
            return True

    def closed(self, event: evt.Event) -> None:
        """EVT_CONN_CLOSE handler of the parent's own server: one of its connections ended."""
        raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        with self._lock:
            if raw in self._mine:
                self._mine.discard(raw)
                self._open[-1] -= 1

    def close(self) -> None:
        for number in range(len(self._channels)):
            self._lost(number)

    def _follow(self, number: int, channel: socket.socket) -> None:
        """Count down the connections a worker says have closed; forget it when it dies."""
        while True:
            try:
                done = channel.recv(64)
            except OSError:
                done = b""
            if not done:
                self._lost(number)
                return
            with self._lock:
                if _READY in done and self._channels[number] is not None:
                    self._open[number] = 0
                    self._waiting -= 1
                    self._settled.notify_all()
                closed = done.count(_CLOSED)
                if self._open[number] < _NEVER:
                    self._open[number] = max(0, self._open[number] - closed)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every worker is ready or gone; False if some are neither by ``timeout``
        (until then the parent serves the connections they would have had)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._waiting <= 0, timeout)

    def _lost(self, number: int) -> None:
        with self._lock:
            channel, self._channels[number] = self._channels[number], None
            if channel is not None and self._open[number] >= _NEVER:
                self._waiting -= 1  # gone before it was ready
                self._settled.notify_all()
            self._open[number] = _NEVER
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.close()


class Receiver:
    """A worker's side: connections from the parent, served by its association server."""

    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self._handed: set[Any] = set()

    def start(self, serve: Callable[[socket.socket, Any], None]) -> None:
        """Serve what the parent hands with ``serve(connection, address)`` (the server's
        ``process_request``), and tell the parent we are ready for it."""
        threading.Thread(
            target=self._receive, args=(serve,), name="dicom-handoff", daemon=True
        ).start()
        self._say(_READY)

    def binding(self) -> tuple[Any, Callable[[evt.Event], None]]:
        """The EVT_CONN_CLOSE binding of the worker's server (:meth:`closed`)."""
        return (evt.EVT_CONN_CLOSE, self.closed)

    def closed(self, event: evt.Event) -> None:
        """EVT_CONN_CLOSE handler: tell the parent one of the connections it handed ended."""
        raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        with self._lock:
            if raw not in self._handed:
                return  # one of the shared TLS port's, which the parent did not hand
            self._handed.discard(raw)
        self._say(_CLOSED)

    def _say(self, what: bytes) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._channel.send(what)

    def _receive(self, serve: Callable[[socket.socket, Any], None]) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self._channel, _ADDRESS_BYTES, 1)
            except OSError:
                return
            if not message and not fds:
                return  # the parent is gone; PR_SET_PDEATHSIG ends us too
            for fd in fds:
                connection = socket.socket(fileno=fd)
                with self._lock:
                    self._handed.add(connection)
                try:
                    host, port = json.loads(message)
                    serve(connection, (str(host), int(port)))
                except Exception:
                    log.exception("a handed DICOM connection could not be served")
                    with self._lock:
                        self._handed.discard(connection)
                    connection.close()
                    self._say(_CLOSED)


def channels(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` socket pairs: the parent's ends and the workers' (inheritable) ends."""
    parents, children = [], []
    for _ in range(count):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child.set_inheritable(True)
        parents.append(parent)
        children.append(child)
    return parents, children


def worker_channel() -> socket.socket | None:
    """This worker's end of its socket pair, when its parent hands it connections."""
    value = os.environ.get(HANDOFF_FD_ENV)
    if not value:
        return None
    return socket.socket(fileno=int(value))
