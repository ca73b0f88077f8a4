"""One bootstrap function per entry point: ``serve``/``run`` (a process of services),
``worker`` (an extra DICOM process of one) and ``python -m services.NAME``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import click

from micropacs import logs, metrics_registry
from micropacs.auth.gate import NoAuthentication
from micropacs.config import Settings, load_settings
from micropacs.errors import InvalidSettings
from micropacs.exposure import dicom_access_note
from micropacs.runtime import Endpoints, run
from micropacs.service import ServiceDescriptor
from micropacs.workers import die_with_parent


def serve(settings: Settings, services: Sequence[ServiceDescriptor]) -> None:
    """Run ``services`` in this process until SIGTERM/SIGINT, announcing where they listen."""
    metrics_registry.prepare(settings.data_dir, settings.dicom.workers)
    logs.configure(settings.log_level)
    names = "+".join(service.name for service in services)

    def announce(endpoints: Endpoints) -> None:
        where = f"{settings.dicom.ae_title}@{settings.dicom.host}:{endpoints.dicom_port}"
        scheme = "https" if settings.http.tls.cert_file is not None else "http"
        click.echo(
            f"micropacs {names} ready: "
            + (f"DICOM {where}, " if endpoints.dicom_port else "")
            + f"HTTP {scheme}://{settings.http.host}:{endpoints.http_port} "
            + f"(/healthz /readyz /metrics), data in {settings.data_dir.resolve()}"
            + (f"; DICOM TLS on port {tls_port}" if (tls_port := endpoints.dicom_tls_port) else "")
            + "".join(f"; {name} on port {port}" for name, port in endpoints.others.items())
            + _access_note(settings)
            + (dicom_access_note(settings.dicom) if endpoints.dicom_port else ""),
            err=True,
        )

    try:
        asyncio.run(run(settings, services, on_ready=announce))
    except (NoAuthentication, InvalidSettings) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(
            f"{exc}. Is another server using the port? Choose others with --dicom-port/--http-port."
        ) from exc


def _access_note(settings: Settings) -> str:
    backend = settings.auth.backend
    if backend is None:
        return "; HTTP open to local clients without credentials (no authentication configured)"
    if backend == "off":
        return "; HTTP authentication OFF: anyone who reaches the port may read and write"
    return f"; HTTP authentication: {backend}"


def serve_worker(services: Sequence[ServiceDescriptor]) -> None:
    """A DICOM worker process of ``serve``, configured by its parent's environment."""
    die_with_parent()
    settings = load_settings()
    logs.configure(settings.log_level)
    asyncio.run(run(settings, services, worker=True))


def serve_alone(service: ServiceDescriptor) -> None:
    """``python -m services.NAME``: one service, configured by ``MICROPACS_`` variables."""
    try:
        serve(load_settings(), [service])
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from exc
