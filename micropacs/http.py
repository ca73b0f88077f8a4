"""The HTTP side every service exposes: /healthz, /readyz and /metrics (plus DICOMweb).

/healthz answers 200 while the process runs; /readyz answers 200 only when
every backend check passes, else 503 with what failed and what to do.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]


class Readiness:
    """The backend checks of a process, run at most every few seconds, kept as a gauge."""

    def __init__(self, registry: CollectorRegistry, checks: Mapping[str, Check]) -> None:
        self._checks = checks
        self._gauge = Gauge(
            "micropacs_ready",
            "1 when every backend check passes, else 0.",
            registry=registry,
            multiprocess_mode="livemax",  # workers never check: the parent speaks for them
        )
        self._checked_at = -1e9
        self.failures: dict[str, str] = {}

    async def refresh(self, max_age: float = 0.0) -> dict[str, str]:
        """Failures by backend (empty when ready), re-checked if older than ``max_age``."""
        if time.monotonic() - self._checked_at < max_age:
            return self.failures
        failures: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                await asyncio.wait_for(check(), timeout=5)
            except Exception as exc:  # noqa: BLE001 - report every failure
                failures[name] = str(exc) or type(exc).__name__
        self.failures, self._checked_at = failures, time.monotonic()
        self._gauge.set(0 if failures else 1)
        return failures


class DataDirUsage:
    """Free and total bytes of the data directory's file system, read at each scrape."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def collect(self) -> Iterable[Metric]:
        try:
            usage = shutil.disk_usage(self._path)
        except OSError:
            return
        free = GaugeMetricFamily(
            "micropacs_data_dir_free_bytes", "Free bytes on the data directory's file system."
        )
        free.add_metric([], usage.free)
        size = GaugeMetricFamily(
            "micropacs_data_dir_size_bytes", "Size of the data directory's file system."
        )
        size.add_metric([], usage.total)
        yield free
        yield size


def build_http_app(
    registry: CollectorRegistry,
    checks: Mapping[str, Check],
    routes: Sequence[BaseRoute] = (),
    cors_origins: Sequence[str] = ("*",),
    exposition: CollectorRegistry | None = None,
) -> Starlette:
    """A Starlette app with the health, readiness and metrics routes, and the services' own
    (DICOMweb), which browsers of ``cors_origins`` may call."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    readiness = Readiness(registry, checks)

    async def readyz(request: Request) -> Response:
        failures = await readiness.refresh()
        if failures:
            return JSONResponse({"status": "unavailable", "failed": failures}, status_code=503)
        return JSONResponse({"status": "ready", "checked": sorted(checks)})

    async def metrics(request: Request) -> Response:
        await readiness.refresh(max_age=10)
        return Response(generate_latest(exposition or registry), media_type=CONTENT_TYPE_LATEST)

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
