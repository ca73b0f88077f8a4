"""The HTTP side every service exposes: /healthz, /readyz, /metrics, /openapi.json (plus
DICOMweb).

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
from http import HTTPStatus
from pathlib import Path
from typing import ClassVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from micropacs.config import HttpSettings
from micropacs.dicomweb.openapi import OPENAPI_PATH, describe
from micropacs.dicomweb.responses import ROOT, problem
from micropacs.errors import MicropacsError, RequestTimeout, RequestTooLarge
from micropacs.tls import RELOAD_INTERVAL, ServerTls

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
Report = Callable[[], Awaitable[Mapping[str, object]]]
"""A figure ``/readyz`` shows beside its checks without failing on it (the index's lag)."""


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
    cors_origins: Sequence[str] = (),
    exposition: CollectorRegistry | None = None,
    access: Middleware | None = None,
    reports: Mapping[str, Report] | None = None,
) -> Starlette:
    """A Starlette app with the health, readiness and metrics routes, and the services' own
    (DICOMweb), behind ``access`` (the authentication gate), which browsers of
    ``cors_origins`` may call."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    readiness = Readiness(registry, checks)

    async def readyz(request: Request) -> Response:
        failures = await readiness.refresh()
        shown = await _reports(reports or {})
        if failures:
            body = {"status": "unavailable", "failed": failures, **shown}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "checked": sorted(checks), **shown})

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

    async def openapi(request: Request) -> Response:
        return JSONResponse(description)

    served: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route(OPENAPI_PATH, openapi),
        *routes,
    ]
    description = describe(
        (route.path, route.methods or ()) for route in served if isinstance(route, Route)
    )
    return Starlette(
        routes=served,
        middleware=[*([cors] if routes else []), *([access] if access else [])],
    )


async def _reports(reports: Mapping[str, Report]) -> dict[str, object]:
    """Each report's figures, or why they are unknown."""
    shown: dict[str, object] = {}
    for name, report in reports.items():
        try:
            shown[name] = dict(await asyncio.wait_for(report(), timeout=5))
        except Exception as exc:  # noqa: BLE001 - a report never fails the readiness
            shown[name] = {"unknown": str(exc) or type(exc).__name__}
    return shown


class RequestLimits:
    """Refuses a request head over ``max_head`` bytes (431), a body over its route's
    limit (413) or one that stalls (408).

    h11 bounds only what it buffers of an incomplete head, so a head that arrives
    whole is measured here. A declared Content-Length over the limit is refused
    before a byte of the body is read; a chunked body is counted as it streams, and
    refused when it passes the limit. Waiting for the next body chunk is bounded by
    ``idle_timeout``. Paths under a prefix of ``overrides`` (STOW-RS) get that
    prefix's limit instead.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_head: int,
        limit: int,
        idle_timeout: float,
        overrides: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._app = app
        self._max_head = max_head
        self._limit = limit
        self._idle = idle_timeout
        self._overrides = tuple(overrides)

    def limit_of(self, path: str) -> int:
        """The largest body a request to ``path`` may send."""
        for prefix, limit in self._overrides:
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self._limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope["query_string"])
        head += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > self._max_head:
            reason = f"the request line and headers are longer than {self._max_head} bytes"
            await _refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, reason, send)
            return
        limit = self.limit_of(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(RequestTooLarge.http, f"the body is larger than {limit} bytes", send)
            return
        received, complete = 0, False
        refused: MicropacsError | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, complete, refused
            if complete:  # only a disconnect can come now, whenever it comes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self._idle)
            except TimeoutError:
                refused = RequestTimeout(f"no body byte arrived for {self._idle:g} s")
                raise refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    refused = RequestTooLarge(f"the body is larger than {limit} bytes")
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None:
                return  # whatever the app answers to a refused body, the refusal is the answer
            started = True
            await send(message)

        try:
            await self._app(scope, limited_receive, guarded_send)
        except Exception:
            if refused is None or started:
                raise
        if refused is not None and not started:
            await _refuse(refused.http, str(refused), send)


async def _refuse(status: int, reason: str, send: Send) -> None:
    """Answer ``status`` and close the connection: the rest of the request is never read."""
    response = problem(status, reason)
    response.headers["Connection"] = "close"
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class BoundedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a bound on the time to receive a request's head.

    uvicorn times out only idle keep-alive connections, and any byte received resets
    that timer, so a client trickling its headers a byte at a time (slow loris), or
    connecting and sending nothing, would hold its connection forever. Here the
    request line and headers must be complete within ``header_timeout`` seconds of
    the connection opening or the previous response ending, else the connection is
    closed. A client that stops reading a response is cut off once the write buffer
    has stayed full for ``write_timeout`` seconds.
    """

    header_timeout: ClassVar[float] = 10.0
    write_timeout: ClassVar[float] = 60.0
    _header_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_request() and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_timer is not None:
            self._write_timer.cancel()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _stalled(self) -> None:
        self._write_timer = None
        log.info("HTTP connection aborted: the client took no byte of the response in time")
        self.transport.abort()

    def _in_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if self._in_request() or self.transport.is_closing():
            return
        log.info("HTTP connection closed: no complete request head in time")
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a client that does not read either
        else:
            self.transport.close()


def bounded_h11(header_timeout: float, write_timeout: float) -> type[BoundedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with these timeouts."""
    timeouts = {"header_timeout": header_timeout, "write_timeout": write_timeout}
    return type("BoundedH11", (BoundedH11Protocol,), timeouts)


def public_url(settings: HttpSettings, port: int, tls: bool = False) -> str:
    """The base URL clients reach the server at, without a trailing slash.

    The configured ``public_url``, else derived from the bound address and port (the
    machine's name when bound to every address). Never a request's Host header,
    which any client may set to anything.
    """
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a comparison, not a bind
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


class HttpServer:
    """uvicorn serving an app on the running event loop, with the limits of ``settings``.

    Header size and time, keep-alive, connection count and body limits come from
    :class:`HttpSettings`; the app's ``state.public_url`` is set once the port is bound.
    With a certificate (``settings.tls``) the port speaks only HTTPS, TLS 1.2 or later
    with the BCP 195 cipher suites, and the certificate is reloaded when its files change.
    """

    _reloading: asyncio.Task[None] | None = None

    def __init__(
        self, app: Starlette, host: str, port: int, settings: HttpSettings | None = None
    ) -> None:
        self._settings = settings = (settings or HttpSettings()).model_copy(
            update={"host": host, "port": port}
        )
        self._app = app
        limited = RequestLimits(
            app,
            settings.max_header_bytes,
            settings.max_body_bytes,
            settings.idle_timeout,
            overrides=[(f"{ROOT}/studies", settings.stow_max_bytes)],
        )
        files = settings.tls
        self._tls = None
        if files.cert_file is not None:
            self._tls = ServerTls(files.cert_file, files.key_file)  # a bad pair stops the start
        config = uvicorn.Config(
            limited,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            http=bounded_h11(settings.header_timeout, settings.idle_timeout),
            h11_max_incomplete_event_size=settings.max_header_bytes,
            timeout_keep_alive=settings.keep_alive_timeout,
            limit_concurrency=settings.max_connections,
            ssl_certfile=files.cert_file,
            ssl_keyfile=files.key_file if files.cert_file is not None else None,
        )
        self._server = uvicorn.Server(config)

    async def start(self) -> int:
        """Start listening; returns the bound port."""
        config = self._server.config
        if not config.loaded:
            config.load()
        if self._tls is not None:
            # Ours: hardened, and handing each handshake to the current pair (reloaded).
            config.ssl = self._tls.context
        # Bound here so a busy port raises OSError instead of uvicorn's sys.exit().
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
        # protocol says TCP, and without it every response with a body waits ~40 ms for
        # the client's delayed ACK (headers and body are two writes).
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        sock.set_inheritable(True)
        port = int(sock.getsockname()[1])
        self._app.state.public_url = public_url(self._settings, port, config.is_ssl)
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[sock])
        if self._tls is not None:
            self._reloading = asyncio.create_task(self._reload(self._tls), name="https-reload")
        return port

    async def stop(self) -> None:
        """Stop listening and close connections."""
        if self._reloading is not None:
            self._reloading.cancel()
        await self._server.shutdown()

    @staticmethod
    async def _reload(tls: ServerTls) -> None:
        # On the loop's thread, where the server creates its TLS connections.
        while True:
            await asyncio.sleep(RELOAD_INTERVAL + 0.05)
            tls.refresh()
