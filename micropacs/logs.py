"""Structured logs: one JSON object per line on stderr.

Call :func:`configure` once in an entry point. Pass context as ``extra``::

    log.info("stored", extra={"sop_class": uid, "bytes": n})

Never put patient data (names, IDs, UIDs of patients) in a log line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as a JSON line with its ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for servers: a structured line naming the warning's kind
    and where it rose, without its text, which libraries fill with the values they
    read (pydicom: "Invalid value for VR PN: 'Novak^Jan'")."""
    logging.getLogger("warnings").warning(
        "library warning", extra={"category": category.__name__, "source": Path(filename).stem}
    )


def configure(level: str = "INFO") -> None:
    """Send every log line as JSON to stderr; quiet pynetdicom's per-PDU chatter, and keep
    the values that libraries put into warnings and their own logs out."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # its warnings quote values
    logging.getLogger("hl7").setLevel(logging.CRITICAL)  # logs whole fields it cannot unescape
    warnings.showwarning = log_warning
