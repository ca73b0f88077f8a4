"""Real failures of the embedded backends, and their end.

Tests run as root, so permissions stop nothing: a backend is made unusable
the way a disk or a neighbour makes it so, and given back afterwards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def sqlite_write_lock(database: Path) -> Iterator[None]:
    """Another connection holds the SQLite database's write lock for the block
    (as a second process writing to the same file would)."""
    conn = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextmanager
def folder_replaced_by_file(folder: Path) -> Iterator[None]:
    """``folder`` is a plain file for the block (no object can be created under it)."""
    away = folder.with_name(folder.name + ".away")
    folder.rename(away)
    folder.write_bytes(b"")
    try:
        yield
    finally:
        folder.unlink()
        away.rename(folder)
