"""The ``micropacs`` command: serve, run one service, manage nodes, and what services add."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import click

from micropacs.bootstrap import serve as serve_services
from micropacs.bootstrap import serve_worker
from micropacs.cli_options import settings_from, settings_options
from micropacs.config import Settings
from micropacs.service_list import SERVICES, named, names


@click.group()
def main() -> None:
    """micropacs: a PACS built as independently scalable services."""


WORKERS = click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes sharing the DICOM port, each running the DICOM services "
    "[MICROPACS_DICOM__WORKERS].",
)


@main.command()
@settings_options
@WORKERS
def serve(**flags: Any) -> None:
    """Run every service in one process: a complete PACS."""
    serve_services(settings_from(**flags), SERVICES)


@main.command(name="run")
@click.argument("service", type=click.Choice(names()))
@settings_options
@WORKERS
def run_one(service: str, **flags: Any) -> None:
    """Run one service alone (configured by MICROPACS_ variables)."""
    serve_services(settings_from(**flags), named([service]))


@main.command(hidden=True)
@click.argument(
    "services",
    nargs=-1,
    type=click.Choice(names([service for service in SERVICES if service.dicom])),
    required=True,
)
def worker(services: tuple[str, ...]) -> None:
    """A DICOM worker process of `serve` (configured by its parent's environment)."""
    serve_worker(named(services))


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
    _catalog_call(settings_from(**flags), lambda catalog: catalog.put_node(node))
    click.echo(f"node {node.ae_title} -> {node.host}:{node.port} saved")


@nodes.command("list")
@settings_options
def nodes_list(**flags: Any) -> None:
    """List the registered nodes."""
    found = _catalog_call(settings_from(**flags), lambda catalog: catalog.nodes())
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
    removed = _catalog_call(
        settings_from(**flags), lambda catalog: catalog.remove_node(node_ae_title)
    )
    if not removed:
        raise click.ClickException(f"no node {node_ae_title!r}; see: micropacs nodes list")
    click.echo(f"node {node_ae_title} removed")


for _service in SERVICES:
    for _command in _service.commands:
        main.add_command(_command)
