"""The flags every ``micropacs`` command shares, and the settings they make.

Services that add commands (``micropacs import`` of ingest) use these too, so
every command reads its configuration the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

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


def settings_from(
    data_dir: Path | None,
    host: str | None,
    dicom_port: int | None,
    http_port: int | None,
    ae_title: str | None,
    workers: int | None = None,
    hl7_port: int | None = None,
) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    return load_settings(
        **{
            "data_dir": str(data_dir) if data_dir else None,
            "dicom.host": host,
            "http.host": host,
            "dicom.port": dicom_port,
            "http.port": http_port,
            "dicom.ae_title": ae_title,
            "dicom.workers": workers,
            "worklist.hl7_port": hl7_port,
        }
    )
