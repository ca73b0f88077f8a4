"""Runs of PDUs written as their pieces: every byte in order through partial writes, more
pieces than one ``sendmsg`` takes, and pynetdicom's own send over TLS, for handlers of the
bytes sent, and when the peer is gone."""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from types import SimpleNamespace
from typing import Any

from micropacs.dimse import socket_writes


def read_all(sock: socket.socket, size: int, into: list[bytes]) -> None:
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    into.append(bytes(got))


def transport(raw: Any, handlers: list[Any] | None = None) -> SimpleNamespace:
    sent: list[bytes] = []
    return SimpleNamespace(
        socket=raw,
        send=sent.append,
        sent=sent,
        event_queue=queue.Queue(),
        assoc=SimpleNamespace(get_handlers=lambda event: handlers or []),
    )


def test_every_byte_arrives_in_order_through_partial_writes() -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # many partial writes
    pieces: list[bytes | memoryview] = []
    for number in range(3 * socket_writes.IOV_MAX):  # more than one sendmsg takes
        block = bytes([number % 251]) * (number % 700)
        pieces += [number.to_bytes(4, "big"), memoryview(block)[1:]]
    expected = b"".join(pieces)
    received: list[bytes] = []
    reader = threading.Thread(target=read_all, args=(right, len(expected), received))
    reader.start()
    via = transport(left)
    socket_writes.send_pieces(via, pieces)
    reader.join(30)
    assert received == [expected]
    assert via.sent == [] and via.event_queue.empty(), "gathered, not joined"
    left.close()
    right.close()


def test_tls_and_handlers_of_the_bytes_get_them_joined() -> None:
    left, right = socket.socketpair()
    with_handler = transport(left, handlers=[object()])
    socket_writes.send_pieces(with_handler, [b"ab", memoryview(b"cd")])
    assert with_handler.sent == [b"abcd"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    wrapped = context.wrap_socket(
        socket.socket(), server_hostname="peer", do_handshake_on_connect=False
    )
    over_tls = transport(wrapped)
    socket_writes.send_pieces(over_tls, [b"ab", b"cd"])
    assert over_tls.sent == [b"abcd"]
    wrapped.close()
    left.close()
    right.close()


def test_a_peer_that_is_gone_closes_the_transport() -> None:
    left, right = socket.socketpair()
    right.close()
    via = transport(left)
    socket_writes.send_pieces(via, [b"x" * 100_000, b"y"])
    assert via.event_queue.get_nowait() == "Evt17"
    left.close()
