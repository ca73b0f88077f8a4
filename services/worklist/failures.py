"""The status Dataset of a refused worklist or MPPS request (PS3.7 C.4, Annex C)."""

from __future__ import annotations

from pydicom import Dataset

COMMENT_MAX = 64
"""Error Comment (0000,0902) is an LO: at most 64 characters (PS3.7 Table E.1-1)."""


def failure(status: int, comment: str, *, error_id: int | None = None) -> Dataset:
    """A status Dataset with an Error Comment and, where a SOP class defines one, an
    Error ID (0000,0903; PS3.4 F.7.2.2.2: 0xA710 after an MPPS's final state)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment[:COMMENT_MAX]
    if error_id is not None:
        ds.ErrorID = error_id
    return ds
