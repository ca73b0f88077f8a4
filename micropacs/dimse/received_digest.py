"""The SHA-256 of each received C-STORE data set, taken while pynetdicom writes it to disk.

With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom 3.0.4 writes a C-STORE-RQ's data
set, fragment by fragment, into a file it opens with the ``NamedTemporaryFile``
of ``pynetdicom.dimse_messages`` (preamble, ``DICM``, File Meta Information,
then every P-DATA fragment, PS3.10 7.1). :func:`install` (once per process)
makes that name give a :class:`~micropacs.checksums.HashingWriter` over the
same temporary file, so the digest of the whole Part 10 file is ready when the
C-STORE handler runs and :func:`received_sha256` gives it: the store path does
not read the file again to record its checksum (PS3.4 J, Storage Commitment).
"""

from __future__ import annotations

import tempfile
import threading
from typing import Any

import pynetdicom.dimse_messages
from pynetdicom import evt

from micropacs.checksums import HashingWriter

_installed = threading.Lock()
_done = False


def _hashing_temporary_file(*args: Any, **kwargs: Any) -> HashingWriter:
    """``tempfile.NamedTemporaryFile(...)``, every byte written through it hashed."""
    # pynetdicom closes it (or micropacs.dimse.wakeups does, for a message nobody took).
    return HashingWriter(tempfile.NamedTemporaryFile(*args, **kwargs))


def received_sha256(event: evt.Event) -> str:
    """The SHA-256 of the file a C-STORE event's data set was received into, or "" when
    it was not written through :func:`install`'s files (the handler must then hash it).

    Call it from the EVT_C_STORE handler, once the data set is whole."""
    stream = getattr(event.request, "_dataset_file", None)
    return stream.sha256() if isinstance(stream, HashingWriter) else ""


def install() -> None:
    """Make pynetdicom write received C-STORE data sets through a hashing file, once."""
    global _done
    with _installed:
        if _done:
            return
        messages: Any = pynetdicom.dimse_messages
        messages.NamedTemporaryFile = _hashing_temporary_file
        _done = True
