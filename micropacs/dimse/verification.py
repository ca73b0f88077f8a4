"""Verification (PS3.4 A, C-ECHO), answered on every DICOM listener micropacs opens.

A modality checks each of its peers with a C-ECHO before it relies on it: its storage
destination, its worklist provider, its Storage Commitment SCP. Those may be different
processes (``micropacs run NAME``, each behind an address of its own in a deployment), so
Verification belongs to the listener, whatever services it runs, not to one service:
:func:`~micropacs.dimse.ae.build_ae` accepts its context and
:func:`~micropacs.dimse.ae.start_server` answers it.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

VERIFICATION = "1.2.840.10008.1.1"
"""The Verification SOP Class."""

OPERATION = "C-ECHO"


def add_context(ae: AE) -> None:
    """Accept Verification in any transfer syntax (a C-ECHO carries no dataset)."""
    ae.add_supported_context(VERIFICATION, ALL_TRANSFER_SYNTAXES)


def handle_echo(event: evt.Event) -> int:
    """C-ECHO (PS3.7 9.1.5): Success while the process runs; every accepted caller may."""
    return 0x0000


def bindings(handlers: list[Any]) -> list[Any]:
    """The C-ECHO binding, unless ``handlers`` bind one of their own."""
    if any(binding[0] is evt.EVT_C_ECHO for binding in handlers):
        return []
    return [(evt.EVT_C_ECHO, handle_echo)]
