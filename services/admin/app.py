"""Builds the admin service from settings and adapters (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pynetdicom import AE
from starlette.routing import BaseRoute, Mount

from micropacs.audit import AuditTrail, audit_metrics
from micropacs.auth.browser import LoginEvent, login_routes
from micropacs.auth.local import LocalCredentials
from micropacs.auth.oidc_login import OidcLogin
from micropacs.auth.session import shared_sessions
from micropacs.bridge import LoopBridge
from micropacs.config import Settings
from micropacs.dimse.scu import Associations
from micropacs.events import AuditRecorded, Outcome
from micropacs.http import Check
from micropacs.query import QueryService
from micropacs.service import Adapters, BackgroundTask, HandlerBinding
from services.admin.api import PREFIX, build_api
from services.admin.context import AdminContext
from services.admin.jobs import SendJobs
from services.admin.metrics import AdminMetrics, observed_routes
from services.admin.sending import Sender
from services.admin.web.routes import login_renderer, page_routes


@dataclass
class AdminApp:
    """The admin service: the REST API at ``/api`` and the web UI's pages."""

    context: AdminContext
    api: FastAPI
    checks: Mapping[str, Check]
    login: list[BaseRoute]

    def add_contexts(self, ae: AE) -> None:
        """None: admin answers no DICOM requests (it only opens associations)."""

    def dimse_handlers(self, bridge: LoopBridge) -> list[HandlerBinding]:
        """None: admin answers no DICOM requests."""
        return []

    def web_routes(self) -> list[BaseRoute]:
        """The login routes, the REST API under ``/api`` and the web UI's pages, each
        request counted and timed by its route (:mod:`services.admin.metrics`)."""
        routes = [*self.login, Mount(PREFIX, app=self.api), *page_routes(self.context)]
        return observed_routes(routes, self.context.metrics)

    def background(self) -> list[BackgroundTask]:
        """None: send jobs run as tasks of the requests that start them."""
        return []


def build(settings: Settings, adapters: Adapters, registry: CollectorRegistry) -> AdminApp:
    """The admin service over the given adapters (its reads of the index wait at the read
    barrier when there is one)."""
    catalog = adapters.require_catalog()
    bus = adapters.require_bus()
    worklist = adapters.require_worklist()
    blobs = adapters.require_blobs()
    query = QueryService(
        catalog, settings.query, settings.dicom.ae_title, adapters.barrier, reader="admin"
    )
    associations = Associations(settings.dicom, settings.admin.send_timeout)
    metrics = AdminMetrics(registry)
    context = AdminContext(
        settings=settings,
        catalog=catalog,
        bus=bus,
        worklist=worklist,
        blobs=blobs,
        credentials=LocalCredentials(catalog),
        jobs=SendJobs(settings.admin.max_jobs),
        registry=registry,
        metrics=metrics,
        query=query,
        sender=Sender(catalog, blobs, associations, metrics),
        associations=associations,
        audit=AuditTrail(bus, audit_metrics(registry)),
        barrier=adapters.barrier,
    )
    return AdminApp(
        context=context,
        api=build_api(context),
        login=_login_routes(context),
        checks={
            "catalog": catalog.check,
            "event_bus": bus.check,
            "worklist": worklist.check,
            "blob_store": blobs.check,
        },
    )


def _login_routes(context: AdminContext) -> list[BaseRoute]:
    """The login page and form for local users and, with a client id, single sign-on;
    each login, failed login and logout goes to the audit trail."""
    auth = context.settings.auth
    if auth.backend not in ("local", "oidc"):
        return []

    async def report(event: LoginEvent) -> None:
        if context.audit is None:
            return
        failed = event.kind == "login-failed"
        await context.audit.record(
            AuditRecorded(
                kind=event.kind,
                outcome=Outcome.MINOR_FAILURE if failed else Outcome.SUCCESS,
                actor=event.actor,
                role=event.role,
                source=event.source,
                detail=event.detail,
            )
        )

    oidc = OidcLogin(auth) if auth.backend == "oidc" and auth.oidc_client_id else None
    return login_routes(
        shared_sessions(auth),
        report,
        credentials=context.credentials if auth.backend == "local" else None,
        oidc=oidc,
        render=login_renderer(),
        home="/studies",
        redirect_url=auth.oidc_redirect_url,
    )
