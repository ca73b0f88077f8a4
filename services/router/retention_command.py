"""What the router adds to the ``micropacs`` command: ``micropacs retention run [--dry-run]``.

The same run as the router's nightly one (:mod:`services.router.retention`), over the
stores of the settings (those of ``serve``): it may run beside a live archive, whose qr
keeps reading the old objects through the grace period. A dry run changes nothing and
lists what would happen: one line per study, tab-separated (action, Study Instance UID,
group, target group, instances, bytes, last received, policy). A real run prints each
study as it is done, then a summary. Exit codes: 0 done, 1 refused (bad settings or
policies, some study failed), 2 wrong usage (click's), 3 a backend unavailable.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
from prometheus_client import CollectorRegistry

from micropacs import logs
from micropacs.adapters.factory import open_blob_stores, open_catalog, open_event_bus
from micropacs.cli_options import settings_from, settings_options
from micropacs.config import Settings
from micropacs.errors import MicropacsError, Unavailable
from micropacs.ports import EventBus
from services.router.retention import Planned, Retention, RunReport
from services.router.retention_metrics import RetentionMetrics
from services.router.retention_policies import configured_policies

REFUSED = 1
UNAVAILABLE = 3


def size_text(size: int) -> str:
    """Bytes for a person (1000-based, as disks are sold)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def plan_line(planned: Planned) -> str:
    """One study of a dry run's list."""
    return "\t".join(
        [
            planned.action,
            planned.study_uid,
            planned.group,
            planned.to or "-",
            str(planned.instances),
            str(planned.bytes),
            planned.last_received,
            planned.policy,
        ]
    )


def _progress(planned: Planned, outcome: str, number: int, total: int) -> None:
    target = f" -> {planned.to}" if planned.to else ""
    click.echo(
        f"[{number}/{total}] {outcome}: {planned.study_uid} {planned.group}{target}"
        f" ({planned.instances} instances, {size_text(planned.bytes)}) by {planned.policy}"
    )


async def run_retention(
    settings: Settings, *, dry_run: bool, policy_names: tuple[str, ...] = ()
) -> RunReport:
    """One run over the configured stores, as the command makes it."""
    policies = configured_policies(settings)
    chosen = [policies.named(name) for name in policy_names] if policy_names else None
    wanted = chosen if chosen is not None else list(policies.policies)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    blobs = await open_blob_stores(
        settings.blob_url, settings.storage.groups, fsync=settings.storage.fsync, s3=settings.s3
    )
    try:
        catalog = await open_catalog(settings.catalog_url)
        try:
            bus: EventBus | None = None
            if not dry_run and any(policy.action == "delete" for policy in wanted):
                bus = await open_event_bus(settings.bus_url, settings.kafka)
            try:
                metrics = RetentionMetrics(CollectorRegistry())
                retention = Retention(catalog, blobs, bus, policies, settings.retention, metrics)
                return await retention.run(
                    "cli", dry_run=dry_run, policies=chosen, progress=_progress
                )
            finally:
                if bus is not None:
                    await bus.close()
        finally:
            await catalog.close()
    finally:
        await blobs.close()


@click.group(name="retention")
def retention_command() -> None:
    """Retention and tiering of the storage groups by their policies (docs/lifecycle.md)."""


@retention_command.command(name="run")
@click.option("--dry-run", is_flag=True, help="List what would happen; change nothing.")
@click.option(
    "--policy", "policy_names", multiple=True, help="Only this policy (repeatable); default all."
)
@settings_options
def run_command(dry_run: bool, policy_names: tuple[str, ...], **flags: Any) -> None:
    """Apply the retention policies now (move or delete what they select), or list it."""
    settings = settings_from(**flags)
    logs.configure("WARNING")
    if settings.retention.policies_file is None:
        click.echo(
            "no retention policies: MICROPACS_RETENTION__POLICIES_FILE is unset"
            " (docs/lifecycle.md)",
            err=True,
        )
    try:
        report = asyncio.run(run_retention(settings, dry_run=dry_run, policy_names=policy_names))
    except Unavailable as exc:
        click.echo(f"unavailable: {exc}", err=True)
        sys.exit(UNAVAILABLE)
    except MicropacsError as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(REFUSED)
    if dry_run:
        for planned in report.planned:
            click.echo(plan_line(planned))
        total = sum(planned.bytes for planned in report.planned)
        click.echo(
            f"dry run: {len(report.planned)} studies, {size_text(total)}; nothing changed",
            err=True,
        )
        return
    click.echo(
        f"moved {report.moved} studies ({size_text(report.bytes_moved)}), deleted"
        f" {report.deleted} ({size_text(report.bytes_deleted)}), deletions not yet applied"
        f" {report.asked}, failed {report.failed}; old objects removed {report.cleaned},"
        f" moves in their grace period {report.waiting}; {report.seconds:.1f} s"
    )
    if report.failed:
        sys.exit(REFUSED)
