"""The ``micropacs`` command: serve, run one service, manage nodes, import files."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from micropacs import logs, metrics_registry
from micropacs.config import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """The flags every command shares; each is also settable by environment."""
    options = [
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            help="Data directory [MICROPACS_DATA_DIR].",
        ),
        click.option("--host", help="Listen address of DICOM and HTTP [MICROPACS_DICOM__HOST]."),
        click.option("--dicom-port", type=int, help="DICOM port [MICROPACS_DICOM__PORT]."),
        click.option("--http-port", type=int, help="HTTP port [MICROPACS_HTTP__PORT]."),
        click.option("--ae-title", help="Our AE title [MICROPACS_DICOM__AE_TITLE]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(
    data_dir: Path | None,
    host: str | None,
    dicom_port: int | None,
    http_port: int | None,
    ae_title: str | None,
    workers: int | None = None,
) -> Settings:
    return load_settings(
        **{
            "data_dir": str(data_dir) if data_dir else None,
            "dicom.host": host,
            "http.host": host,
            "dicom.port": dicom_port,
            "http.port": http_port,
            "dicom.ae_title": ae_title,
            "dicom.workers": workers,
        }
    )


@click.group()
def main() -> None:
    """micropacs: a PACS built as independently scalable services."""


def _serve(settings: Settings, services: tuple[str, ...]) -> None:
    metrics_registry.prepare(settings.data_dir, settings.dicom.workers)
    from micropacs.runtime import Endpoints, run

    logs.configure(settings.log_level)

    def announce(endpoints: Endpoints) -> None:
        where = f"{settings.dicom.ae_title}@{settings.dicom.host}:{endpoints.dicom_port}"
        click.echo(
            f"micropacs {'+'.join(services)} ready: "
            + (f"DICOM {where}, " if endpoints.dicom_port else "")
            + f"HTTP http://{settings.http.host}:{endpoints.http_port} "
            + f"(/healthz /readyz /metrics), data in {settings.data_dir.resolve()}",
            err=True,
        )

    try:
        asyncio.run(run(settings, services, on_ready=announce))
    except OSError as exc:
        raise click.ClickException(
            f"{exc}. Is another server using the port? Choose others with --dicom-port/--http-port."
        ) from exc


WORKERS = click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes sharing the DICOM port, each running ingest and qr [MICROPACS_DICOM__WORKERS].",
)


@main.command()
@settings_options
@WORKERS
def serve(**flags: Any) -> None:
    """Run ingest, index and qr in one process: a complete PACS."""
    _serve(_settings(**flags), ("ingest", "index", "qr"))


@main.command(name="run")
@click.argument("service", type=click.Choice(["ingest", "index", "qr"]))
@settings_options
@WORKERS
def run_one(service: str, **flags: Any) -> None:
    """Run one service alone (configured by MICROPACS_ variables)."""
    _serve(_settings(**flags), (service,))


@main.command(hidden=True)
@click.argument("services", nargs=-1, type=click.Choice(["ingest", "qr"]), required=True)
def worker(services: tuple[str, ...]) -> None:
    """A DICOM worker process of `serve` (configured by its parent's environment)."""
    from micropacs.runtime import run
    from micropacs.workers import die_with_parent

    die_with_parent()
    settings = load_settings()
    logs.configure(settings.log_level)
    asyncio.run(run(settings, services, reuse_port=True))


@main.group()
def nodes() -> None:
    """The registry of known DICOM nodes (C-MOVE destinations, allowed callers)."""


def _catalog_call(settings: Settings, action: Callable[[Any], Any]) -> Any:
    from micropacs.adapters.factory import open_catalog

    async def go() -> Any:
        catalog = await open_catalog(settings.catalog_url)
        try:
            return await action(catalog)
        finally:
            await catalog.close()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(go())


@nodes.command("add")
@click.argument("node_ae_title", metavar="AE_TITLE")
@click.argument("node_host", metavar="HOST")
@click.argument("node_port", metavar="PORT", type=click.IntRange(1, 65535))
@click.option("--description", default="", help="What the node is (e.g. 'CT console, room 2').")
@click.option("--tls", is_flag=True, help="The node speaks DICOM over TLS.")
@click.option("--issuer-of-patient-id", default="", help="Issuer of Patient ID of its patients.")
@click.option("--issuer-of-accession-number", default="", help="Issuer of its accession numbers.")
@click.option("--user-id", default="", help="User identity for the node.")
@click.option("--storage-group", default="", help="Storage (FS) group its objects go to.")
@click.option("--ae-group", default="", help="AE group, e.g. diagnostic or radiotherapy.")
@settings_options
def nodes_add(
    node_ae_title: str,
    node_host: str,
    node_port: int,
    description: str,
    tls: bool,
    issuer_of_patient_id: str,
    issuer_of_accession_number: str,
    user_id: str,
    storage_group: str,
    ae_group: str,
    **flags: Any,
) -> None:
    """Add or replace a node; a running server uses it from its next association."""
    from micropacs.ports import Node

    if not 0 < len(node_ae_title.strip()) <= 16 or "\\" in node_ae_title:
        raise click.BadParameter("an AE title has 1 to 16 characters and no backslash")
    node = Node(
        ae_title=node_ae_title.strip(),
        host=node_host,
        port=node_port,
        description=description,
        tls=tls,
        issuer_of_patient_id=issuer_of_patient_id,
        issuer_of_accession_number=issuer_of_accession_number,
        user_id=user_id,
        storage_group=storage_group,
        ae_group=ae_group,
    )
    _catalog_call(_settings(**flags), lambda catalog: catalog.put_node(node))
    click.echo(f"node {node.ae_title} -> {node.host}:{node.port} saved")


@nodes.command("list")
@settings_options
def nodes_list(**flags: Any) -> None:
    """List the registered nodes."""
    found = _catalog_call(_settings(**flags), lambda catalog: catalog.nodes())
    if not found:
        click.echo("no nodes registered; add one with: micropacs nodes add AE_TITLE HOST PORT")
        return
    click.echo(f"{'AE TITLE':16}  {'HOST':24}  {'PORT':>5}  {'GROUP':12}  DESCRIPTION")
    for node in found:
        click.echo(
            f"{node.ae_title:16}  {node.host:24}  {node.port:>5}  {node.ae_group:12}  "
            f"{node.description}"
        )


@nodes.command("remove")
@click.argument("node_ae_title", metavar="AE_TITLE")
@settings_options
def nodes_remove(node_ae_title: str, **flags: Any) -> None:
    """Remove a node."""
    removed = _catalog_call(_settings(**flags), lambda catalog: catalog.remove_node(node_ae_title))
    if not removed:
        raise click.ClickException(f"no node {node_ae_title!r}; see: micropacs nodes list")
    click.echo(f"node {node_ae_title} removed")


@main.command(name="import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@settings_options
def import_(directory: Path, **flags: Any) -> None:
    """Store every DICOM file under DIRECTORY (the index picks them up)."""
    from services.ingest.importer import import_directory

    settings = _settings(**flags)
    logs.configure("WARNING")
    summary = asyncio.run(import_directory(settings, directory))
    click.echo(
        f"stored {summary.stored}, skipped {summary.skipped} non-DICOM, failed {summary.failed}"
    )
    if summary.failed:
        sys.exit(1)
