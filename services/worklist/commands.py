"""What the worklist adds to the ``micropacs`` command: ``micropacs worklist add | list | remove``.

The same checks and events as the API (:mod:`services.worklist.scheduling`),
with the settings of ``serve``: an item added is published on the event bus,
and the index of a running (or the next) ``micropacs serve`` applies it; the
listing reads the Worklist store. Exit codes: 0 done, 1 refused (a bad item,
an unknown id), 2 wrong usage (click's), 3 a backend unavailable.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from prometheus_client import CollectorRegistry

from micropacs import logs
from micropacs.adapters.factory import open_event_bus, open_worklist
from micropacs.cli_options import settings_from, settings_options
from micropacs.config import Settings
from micropacs.dicom import worklist as model
from micropacs.dicom.json_model import first_text, text_of
from micropacs.dicom.tags import ACCESSION_NUMBER, MODALITY
from micropacs.errors import InvalidInput, MicropacsError, Unavailable
from micropacs.ports import WorklistItem
from micropacs.read_barrier import ReadBarrier, ReadBarrierMetrics
from services.worklist.scheduling import Scheduler, as_json, parse_filters

T = TypeVar("T")
REFUSED = 1
UNAVAILABLE = 3


def _run(settings: Settings, work: Callable[[Scheduler], Awaitable[T]]) -> T:
    """``work`` over a Scheduler of the configured bus and store; errors as exit codes."""

    async def main() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        bus = await open_event_bus(settings.bus_url, settings.kafka)
        try:
            store = await open_worklist(settings.worklist_url)
            try:
                metrics = ReadBarrierMetrics(CollectorRegistry())
                barrier = ReadBarrier(bus, settings.index.group, settings.read_barrier, metrics)
                try:
                    scheduler = Scheduler(bus, store, settings.query.max_results, barrier)
                    return await work(scheduler)
                finally:
                    await barrier.close()
            finally:
                await store.close()
        finally:
            await bus.close()

    try:
        return asyncio.run(main())
    except InvalidInput as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(REFUSED)
    except Unavailable as exc:
        click.echo(f"unavailable: {exc}", err=True)
        sys.exit(UNAVAILABLE)
    except MicropacsError as exc:
        click.echo(f"failed: {exc}", err=True)
        sys.exit(REFUSED)


@click.group(name="worklist")
def worklist_command() -> None:
    """Schedule procedures without a RIS: add, list and remove worklist items."""


@worklist_command.command(name="add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@settings_options
def add_command(file: Path, **flags: Any) -> None:
    """Schedule the item in FILE (one item in the DICOM JSON model); prints its id."""
    settings = settings_from(**flags)
    logs.configure("WARNING")
    try:
        data = json.loads(file.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        click.echo(f"refused: {file} is not JSON: {exc}", err=True)
        sys.exit(REFUSED)
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    item = _run(settings, lambda scheduler: scheduler.add(data))
    click.echo(item.item_id)


@worklist_command.command(name="list")
@click.option("--station", help="Only the items of this Scheduled Station AE Title.")
@click.option(
    "--date", help="Scheduled start date or range (20261201, 20261201-20261207, 20261201-)."
)
@click.option("--status", help="Only the items of this status (any if absent).")
@click.option("--json", "as_json_lines", is_flag=True, help="One JSON object per item.")
@settings_options
def list_command(
    station: str | None,
    date: str | None,
    status: str | None,
    as_json_lines: bool,
    **flags: Any,
) -> None:
    """The scheduled items, by scheduled start: id, status, date, time, station, modality,
    accession number."""
    settings = settings_from(**flags)
    logs.configure("WARNING")
    params = [
        (name, value)
        for name, value in (
            ("ScheduledStationAETitle", station),
            ("ScheduledProcedureStepStartDate", date),
            ("status", status),
        )
        if value
    ]

    async def find(scheduler: Scheduler) -> list[WorklistItem]:
        return await scheduler.find(parse_filters(params))

    for item in _run(settings, find):
        if as_json_lines:
            click.echo(json.dumps(as_json(item), ensure_ascii=False))
        else:
            click.echo("\t".join(_row(item)))


def _row(item: WorklistItem) -> list[str]:
    step = model.scheduled_step(item.dataset)
    keys = model.keys_of(item.dataset)
    stations = ",".join(text_of(step.get(model.SCHEDULED_STATION_AE_TITLE), skip_blank=True))
    return [
        item.item_id,
        keys.status,
        keys.start_date or "-",
        keys.start_time or "-",
        stations or "-",
        first_text(step, MODALITY) or "-",
        first_text(item.dataset, ACCESSION_NUMBER) or "-",
    ]


@worklist_command.command(name="remove")
@click.argument("item_id", metavar="ID")
@settings_options
def remove_command(item_id: str, **flags: Any) -> None:
    """Remove the item ID from the worklist."""
    settings = settings_from(**flags)
    logs.configure("WARNING")
    if not _run(settings, lambda scheduler: scheduler.remove(item_id)):
        click.echo(f"no worklist item {item_id}", err=True)
        sys.exit(REFUSED)
    click.echo(f"removed {item_id}")
