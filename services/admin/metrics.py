"""Prometheus metrics of the admin service, on an injected registry.

Requests are labelled by their route's template (``/api/studies/{study_uid}``), never by
the path a client sent, so no UID and no name reaches a label and the set of series stays
bounded. Logins and failed logins are counted by the audit trail's own counters
(``micropacs_audit_recorded_total{kind="login-failed"}``), not twice here.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "other"
"""The route label of a request no route of the admin's took (a 404 inside ``/api``)."""


class AdminMetrics:
    """HTTP requests by route, send jobs and their instances, deletions requested."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "micropacs_admin_requests_total",
            "Requests the admin API and web UI answered, by route template, method and"
            " HTTP status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "micropacs_admin_request_seconds",
            "Time from a request's arrival to the end of its answer (a streamed ZIP: the"
            " whole download), by route template.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
            registry=registry,
        )
        self.send_jobs_started = Counter(
            "micropacs_admin_send_jobs_started_total",
            "Send jobs started (a study or series sent to a node by C-STORE).",
            registry=registry,
        )
        self.send_jobs_finished = Counter(
            "micropacs_admin_send_jobs_finished_total",
            "Send jobs ended, by outcome: completed (every instance stored) or failed.",
            ["outcome"],
            registry=registry,
        )
        self.sent_instances = Counter(
            "micropacs_admin_sent_instances_total",
            "Instances of send jobs, by result: sent (Success or Warning) or failed.",
            ["result"],
            registry=registry,
        )
        self.deletions = Counter(
            "micropacs_admin_deletions_requested_total",
            "Deletions requested (acknowledged by the event bus), by level: study, series,"
            " instance.",
            ["level"],
            registry=registry,
        )


class Observed:
    """An ASGI app that counts and times each HTTP request ``app`` answers.

    ``route`` labels the request; None takes the template of the innermost route that
    matched (``scope["route"]``, set by the router ``app`` holds), under ``prefix``.
    """

    def __init__(
        self, app: ASGIApp, metrics: AdminMetrics, route: str | None = None, prefix: str = ""
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._route = route
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the answer began: the server's error

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, observed)
        finally:
            route = self._route or self._matched(scope)
            self._metrics.requests.labels(
                route=route, method=scope["method"], status=str(status)
            ).inc()
            self._metrics.request_seconds.labels(route=route).observe(time.perf_counter() - started)

    def _matched(self, scope: Scope) -> str:
        matched = scope.get("route")
        path = getattr(matched, "path", None)
        if not isinstance(matched, Route) or not isinstance(path, str):
            return UNMATCHED
        return self._prefix + path


def observed_routes(routes: list[BaseRoute], metrics: AdminMetrics) -> list[BaseRoute]:
    """``routes`` with every request they answer counted and timed: a route by its own
    template, a mount of static files by its path, a mounted application (the REST API)
    by the template of the route inside it that answered."""
    for route in routes:
        if isinstance(route, Route):
            route.app = Observed(route.app, metrics, route=route.path)
        elif isinstance(route, Mount) and route.app is not None:
            if route.routes:
                route.app = Observed(route.app, metrics, prefix=route.path)
            else:
                route.app = Observed(route.app, metrics, route=route.path)
    return routes
