"""What ingest adds to the ``micropacs`` command: ``micropacs import DIR``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from micropacs import logs
from micropacs.cli_options import settings_from, settings_options
from services.ingest.importer import import_directory


@click.command(name="import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@settings_options
def import_command(directory: Path, **flags: Any) -> None:
    """Store every DICOM file under DIRECTORY (the index picks them up)."""
    settings = settings_from(**flags)
    logs.configure("WARNING")
    summary = asyncio.run(import_directory(settings, directory))
    click.echo(
        f"stored {summary.stored}, skipped {summary.skipped} non-DICOM, failed {summary.failed}"
    )
    if summary.failed:
        sys.exit(1)
