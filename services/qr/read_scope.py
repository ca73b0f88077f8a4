"""What a query or retrieval of the qr service waits for at the read barrier."""

from __future__ import annotations

from micropacs.query import scope_of

READER = "qr"
"""The qr service's label on the read barrier's metrics."""

__all__ = ["READER", "scope_of"]
