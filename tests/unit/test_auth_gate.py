"""The authentication gate in front of a real Starlette app: what passes unauthenticated.

No server in front speaks WebSocket today (uvicorn has no WebSocket library
installed), so the ASGI messages a server would send are sent here directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import Message, Scope
from starlette.websockets import WebSocket

from micropacs.auth.gate import Gate, _local_clients


async def hello(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("studies")
    await websocket.close()


def gated(started: list[bool]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(True)
        yield

    # No loopback client address below: the gate finds no principal.
    gate = Middleware(Gate, authenticate=_local_clients, metrics_open=True, basic=False)
    return Starlette(routes=[WebSocketRoute("/ws", hello)], middleware=[gate], lifespan=lifespan)


async def converse(app: Starlette, scope: Scope, first: Message) -> list[Message]:
    sent: list[Message] = []
    incoming: asyncio.Queue[Message] = asyncio.Queue()
    incoming.put_nowait(first)

    async def receive() -> Message:
        return await incoming.get()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            incoming.put_nowait({"type": "lifespan.shutdown"})

    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


def websocket_scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"host", b"pacs.example")],
        "client": ("192.0.2.7", 40000),
        "server": ("192.0.2.1", 8080),
        "subprotocols": [],
    }


def test_a_websocket_is_refused_without_reaching_the_app() -> None:
    sent = asyncio.run(converse(gated([]), websocket_scope(), {"type": "websocket.connect"}))
    assert [message["type"] for message in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008


def test_the_lifespan_still_reaches_the_app() -> None:
    started: list[bool] = []
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    sent = asyncio.run(converse(gated(started), scope, {"type": "lifespan.startup"}))
    assert started == [True]
    assert sent[0]["type"] == "lifespan.startup.complete"
