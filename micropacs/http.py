"""The HTTP side every service exposes: /healthz, /readyz and /metrics (plus DICOMweb).

/healthz answers 200 while the process runs; /readyz answers 200 only when
every backend check passes, else 503 with what failed and what to do.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]


def build_http_app(
    registry: CollectorRegistry,
    checks: Mapping[str, Check],
    routes: Sequence[BaseRoute] = (),
    cors_origins: Sequence[str] = ("*",),
) -> Starlette:
    """A Starlette app with the health, readiness and metrics routes, and the services' own
    (DICOMweb), which browsers of ``cors_origins`` may call."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        failures: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=5)
            except Exception as exc:  # noqa: BLE001 - report every failure
                failures[name] = str(exc) or type(exc).__name__
        if failures:
            return JSONResponse({"status": "unavailable", "failed": failures}, status_code=503)
        return JSONResponse({"status": "ready", "checked": sorted(checks)})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    cors = Middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["ETag", "Warning", "Content-Location"],
    )
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *routes,
        ],
        middleware=[cors] if routes else [],
    )


class HttpServer:
    """uvicorn serving an app on the running event loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)

    async def start(self) -> int:
        """Start listening; returns the bound port."""
        config = self._server.config
        if not config.loaded:
            config.load()
        # Bound here so a busy port raises OSError instead of uvicorn's sys.exit().
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
        # protocol says TCP, and without it every response with a body waits ~40 ms for
        # the client's delayed ACK (headers and body are two writes).
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        sock.set_inheritable(True)
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[sock])
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close connections."""
        await self._server.shutdown()
