"""What a DICOMweb client accepts, from its ``Accept`` header (PS3.18 8.7).

Pure functions: each turns the header into the transfer syntaxes (or media
type) a retrieval may answer with, or raises
:class:`~micropacs.errors.UnsupportedTransfer` (406) when it names only
things micropacs cannot send.
"""

from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian

from micropacs.dicom import frames, render
from micropacs.dicomweb.multipart import parameters
from micropacs.errors import UnsupportedTransfer

ANY_MULTIPART = ("*/*", "multipart/related", "multipart/*")


def instance_syntaxes(accept: str) -> set[str]:
    """Transfer syntaxes allowed for application/dicom parts (PS3.18 8.7.3.5).

    A part without ``transfer-syntax`` means Explicit VR Little Endian
    (8.7.3.5.2); ``*`` means any, so instances go as stored.
    """
    found: set[str] = set()
    for item in accept.split(","):
        media, params = parameters(item)
        part_type = params.get("type", "application/dicom").lower()
        if media in (*ANY_MULTIPART, "application/dicom") and (
            part_type == "application/dicom" or media == "application/dicom"
        ):
            found.add(params.get("transfer-syntax", ExplicitVRLittleEndian))
    if not found and accept.strip():
        raise UnsupportedTransfer(f"cannot answer with {accept!r}")
    return found or {ExplicitVRLittleEndian}


def frame_syntaxes(accept: str) -> set[str]:
    """Transfer syntaxes allowed for frames and pixel data (PS3.18 8.7.3.3.2)."""
    found: set[str] = set()
    for item in accept.split(","):
        media, params = parameters(item)
        if media not in ANY_MULTIPART:
            continue
        part_type = params.get("type", frames.OCTET_STREAM).lower()
        syntax = params.get("transfer-syntax")
        if syntax:
            found.add(syntax)
        elif part_type == frames.OCTET_STREAM or media == "*/*":
            found.add(ExplicitVRLittleEndian)
        else:
            found.update(u for u in frames.MEDIA_TYPES if frames.MEDIA_TYPES[u] == part_type)
    if not found and accept.strip() and "*/*" not in accept:
        raise UnsupportedTransfer(f"frames cannot be sent as {accept!r}")
    return found or {ExplicitVRLittleEndian}


def rendered_type(accept: str) -> str:
    """The media type of a rendered image (PS3.18 8.7.4): image/jpeg unless PNG is asked."""
    for item in accept.split(","):
        media, _ = parameters(item)
        if media in render.RENDERED_TYPES:
            return media
        if media in ("*/*", "image/*", ""):
            return "image/jpeg"
    raise UnsupportedTransfer(f"rendered images are image/jpeg or image/png, not {accept!r}")
