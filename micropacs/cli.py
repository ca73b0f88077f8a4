"""The ``micropacs`` command: serve, run one service, manage nodes, tokens and users, and
what services add."""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from micropacs.auth.local import TOKEN, USER, LocalCredentials
from micropacs.auth.principal import Role
from micropacs.bootstrap import serve as serve_services
from micropacs.bootstrap import serve_worker
from micropacs.cli_options import settings_from, settings_options
from micropacs.config import Settings
from micropacs.errors import InvalidInput
from micropacs.ports import Credential, Node
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
HL7_PORT = click.option(
    "--hl7-port",
    type=click.IntRange(0, 65535),
    help="HL7 v2 MLLP port of the worklist service, 0 for a free one (default 2575)"
    " [MICROPACS_WORKLIST__HL7_PORT].",
)


@main.command()
@settings_options
@WORKERS
@HL7_PORT
def serve(**flags: Any) -> None:
    """Run every service in one process: a complete PACS."""
    serve_services(settings_from(**flags), SERVICES)


@main.command(name="run")
@click.argument("service", type=click.Choice(names()))
@settings_options
@WORKERS
@HL7_PORT
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
@click.option(
    "--user-id",
    default="",
    help="The user name it must present in its User Identity negotiation (with"
    " MICROPACS_DICOM__USER_IDENTITY optional or required).",
)
@click.option("--storage-group", default="", help="Storage (FS) group its objects go to.")
@click.option("--ae-group", default="", help="AE group, e.g. diagnostic or radiotherapy.")
@click.option("--no-store", is_flag=True, help="It may not send us objects (C-STORE).")
@click.option("--no-query", is_flag=True, help="It may not query (C-FIND).")
@click.option("--no-retrieve", is_flag=True, help="It may not retrieve (C-GET, C-MOVE).")
@click.option(
    "--no-move-destination", is_flag=True, help="It may not be named as a C-MOVE destination."
)
@click.option(
    "--allow-from",
    "allow_from",
    multiple=True,
    metavar="CIDR",
    help="A network it may also call from (e.g. 10.1.2.0/24); repeatable.",
)
@click.option(
    "--not-from-host",
    is_flag=True,
    help="It calls only from the --allow-from networks, not from HOST's addresses.",
)
@click.option(
    "--tls-certificate",
    "tls_certificates",
    multiple=True,
    metavar="PEM_FILE|SHA256",
    help="It must call over TLS presenting this certificate (a PEM file, or its SHA-256"
    " fingerprint); repeatable, for a renewal.",
)
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
    no_store: bool,
    no_query: bool,
    no_retrieve: bool,
    no_move_destination: bool,
    allow_from: tuple[str, ...],
    not_from_host: bool,
    tls_certificates: tuple[str, ...],
    **flags: Any,
) -> None:
    """Add or replace a node; a running server uses it from its next association.

    A new node may store, query, retrieve and be a move destination, calling
    from the addresses HOST resolves to; the options take rights away or add
    networks.
    """
    if not 0 < len(node_ae_title.strip()) <= 16 or "\\" in node_ae_title:
        raise click.BadParameter("an AE title has 1 to 16 characters and no backslash")
    if not_from_host and not allow_from:
        raise click.BadParameter("--not-from-host needs at least one --allow-from network")
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
        store=not no_store,
        query=not no_query,
        retrieve=not no_retrieve,
        move_destination=not no_move_destination,
        allowed_from=allow_from,
        from_host=not not_from_host,
        tls_certificates=tuple(_fingerprint(given) for given in tls_certificates),
    )
    try:
        node.networks()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-from") from exc
    try:
        node.fingerprints()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tls-certificate") from exc
    _catalog_call(settings_from(**flags), lambda catalog: catalog.put_node(node))
    click.echo(f"node {node.ae_title} -> {node.host}:{node.port} saved")


PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----"
)


def _fingerprint(given: str) -> str:
    """The SHA-256 fingerprint of the first certificate of a PEM file, or ``given`` itself."""
    path = Path(given)
    if not path.is_file():
        return given
    found = PEM_CERTIFICATE.search(path.read_text(errors="replace"))
    if found is None:
        hint = "--tls-certificate"
        raise click.BadParameter(f"{given} holds no PEM certificate", param_hint=hint)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(found.group())).hexdigest()


@nodes.command("list")
@settings_options
def nodes_list(**flags: Any) -> None:
    """List the registered nodes."""
    found = _catalog_call(settings_from(**flags), lambda catalog: catalog.nodes())
    if not found:
        click.echo("no nodes registered; add one with: micropacs nodes add AE_TITLE HOST PORT")
        return
    click.echo(
        f"{'AE TITLE':16}  {'HOST':24}  {'PORT':>5}  {'MAY':31}  {'FROM':24}  "
        f"{'GROUP':12}  DESCRIPTION"
    )
    for node in found:
        click.echo(
            f"{node.ae_title:16}  {node.host:24}  {node.port:>5}  {_rights(node):31}  "
            f"{_origins(node):24}  {node.ae_group:12}  {node.description}"
        )


def _rights(node: Node) -> str:
    """What a node may do, e.g. ``store,query`` (``-`` for nothing)."""
    named = [("store", node.store), ("query", node.query), ("retrieve", node.retrieve)]
    named.append(("move-dest", node.move_destination))
    return ",".join(name for name, granted in named if granted) or "-"


def _origins(node: Node) -> str:
    """Where a node may call from: ``host`` and its networks."""
    return ",".join((["host"] if node.from_host else []) + list(node.allowed_from)) or "-"


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


ROLE = click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    required=True,
    help="viewer reads, operator also stores, administrator also manages.",
)


@main.group()
def tokens() -> None:
    """API tokens for the HTTP APIs (MICROPACS_AUTH__BACKEND=local)."""


@tokens.command("add")
@ROLE
@click.option("--description", default="", help="Who or what uses it (e.g. 'OHIF, room 2').")
@click.option(
    "--expires-in-days", type=click.IntRange(1, 3650), default=None, help="Default: never."
)
@settings_options
def tokens_add(role: str, description: str, expires_in_days: int | None, **flags: Any) -> None:
    """Create a token; it is shown once, only its hash is kept."""
    expires = timedelta(days=expires_in_days) if expires_in_days else None

    async def create(catalog: Any) -> tuple[str, Credential]:
        return await LocalCredentials(catalog).create_token(Role(role), description, expires)

    text, credential = _catalog_call(settings_from(**flags), create)
    click.echo(text)
    click.echo(
        f"token {credential.name} ({credential.role}) created; it is not shown again."
        " Send it as 'Authorization: Bearer <token>'.",
        err=True,
    )


@tokens.command("list")
@settings_options
def tokens_list(**flags: Any) -> None:
    """List the tokens (never their secrets)."""
    found = _catalog_call(settings_from(**flags), lambda catalog: catalog.credentials(TOKEN))
    if not found:
        click.echo("no tokens; create one with: micropacs tokens add --role viewer")
        return
    click.echo(f"{'ID':12}  {'ROLE':13}  {'EXPIRES':25}  DESCRIPTION")
    for token in found:
        click.echo(
            f"{token.name:12}  {token.role:13}  {token.expires_at or 'never':25}  "
            f"{token.description}"
        )


@tokens.command("remove")
@click.argument("token_id")
@settings_options
def tokens_remove(token_id: str, **flags: Any) -> None:
    """Revoke a token at once."""
    removed = _catalog_call(
        settings_from(**flags), lambda catalog: catalog.remove_credential(TOKEN, token_id)
    )
    if not removed:
        raise click.ClickException(f"no token {token_id!r}; see: micropacs tokens list")
    click.echo(f"token {token_id} removed")


@main.group()
def users() -> None:
    """Local users of the HTTP APIs (HTTP Basic; MICROPACS_AUTH__BACKEND=local)."""


@users.command("add")
@click.argument("name")
@ROLE
@click.option("--description", default="", help="Who the user is.")
@click.password_option(help="The password (asked for when not given; at least 12 characters).")
@settings_options
def users_add(name: str, role: str, description: str, password: str, **flags: Any) -> None:
    """Add a user, or replace its password and role."""

    async def add(catalog: Any) -> None:
        await LocalCredentials(catalog).set_user(name, password, Role(role), description)

    try:
        _catalog_call(settings_from(**flags), add)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(f"user {name} ({role}) saved")


@users.command("list")
@settings_options
def users_list(**flags: Any) -> None:
    """List the users."""
    found = _catalog_call(settings_from(**flags), lambda catalog: catalog.credentials(USER))
    if not found:
        click.echo("no users; add one with: micropacs users add NAME --role viewer")
    for user in found:
        click.echo(f"{user.name:24}  {user.role:13}  {user.description}")


@users.command("remove")
@click.argument("name")
@settings_options
def users_remove(name: str, **flags: Any) -> None:
    """Remove a user."""
    removed = _catalog_call(
        settings_from(**flags), lambda catalog: catalog.remove_credential(USER, name)
    )
    if not removed:
        raise click.ClickException(f"no user {name!r}; see: micropacs users list")
    click.echo(f"user {name} removed")


@main.command()
@click.option("--study", "study_uid", required=True, metavar="UID", help="StudyInstanceUID.")
@click.option("--series", "series_uid", default="", metavar="UID", help="Only this series.")
@click.option(
    "--instance", "sop_instance_uid", default="", metavar="UID", help="Only this instance."
)
@click.option("--reason", default="", help="Why (kept with the deletion event).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@settings_options
def delete(
    study_uid: str, series_uid: str, sop_instance_uid: str, reason: str, yes: bool, **flags: Any
) -> None:
    """Delete a study, a series of it (--series) or one instance (--series --instance)."""
    from prometheus_client import CollectorRegistry

    from micropacs.adapters.factory import open_catalog, open_event_bus
    from micropacs.audit import AuditTrail, audit_metrics
    from micropacs.deletion import DeletionTarget, request_deletion, validated
    from micropacs.errors import MicropacsError
    from micropacs.events import AuditRecorded, Outcome

    settings = settings_from(**flags)
    if sop_instance_uid and not series_uid:
        raise click.UsageError("--instance needs --series")
    try:
        target = validated(DeletionTarget(study_uid, series_uid, sop_instance_uid))
    except MicropacsError as exc:
        raise click.ClickException(str(exc)) from exc

    async def count(catalog: Any) -> int:
        return len(
            await catalog.locate(
                study_uids=[target.study_uid],
                series_uids=[target.series_uid] if target.series_uid else (),
                sop_instance_uids=[target.sop_instance_uid] if target.sop_instance_uid else (),
            )
        )

    instances = int(_catalog_call(settings, count))
    if not instances:
        raise click.ClickException(f"the archive holds no such {target.level}")
    if not yes:
        click.confirm(f"Delete this {target.level} ({instances} instances)?", abort=True)

    async def go() -> Any:
        catalog = await open_catalog(settings.catalog_url)
        try:
            bus = await open_event_bus(settings.bus_url, settings.kafka)
            try:
                receipt = await request_deletion(bus, catalog, target, "cli", reason)
                trail = AuditTrail(bus, audit_metrics(CollectorRegistry()))
                await trail.record(
                    AuditRecorded(
                        kind="study-deleted",
                        outcome=Outcome.SUCCESS,
                        actor="cli",
                        role=Role.ADMINISTRATOR.value,
                        study_uids=(target.study_uid,),
                        detail=f"{target.level} deletion {receipt.deletion_id}: {reason}",
                    )
                )
                return receipt
            finally:
                await bus.close()
        finally:
            await catalog.close()

    try:
        receipt = asyncio.run(go())
    except MicropacsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{target.level} deletion {receipt.deletion_id} requested: {receipt.instances}"
        " instances; the index removes them"
    )


for _service in SERVICES:
    for _command in _service.commands:
        main.add_command(_command)
