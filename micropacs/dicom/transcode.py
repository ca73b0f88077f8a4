"""Transfer syntax conversion for retrieval and storage (PS3.5 10, A.4).

Decoding uses pydicom's pixel data handlers with the pylibjpeg plug-ins:
pylibjpeg-libjpeg (JPEG baseline/extended/lossless, JPEG-LS), pylibjpeg-openjpeg
(JPEG 2000, HTJ2K) and pylibjpeg-rle (RLE); deflate is pydicom's own. Encoding
is pydicom's, with the same plug-ins and pyjpegls: RLE Lossless, JPEG-LS
(lossless and near-lossless) and JPEG 2000 (lossless and lossy); see
:data:`ENCODABLE`. Video syntaxes (MPEG-2, MPEG-4, HEVC) cannot be decoded to
frames here: converting them raises :class:`~micropacs.errors.UnsupportedTransfer`.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from micropacs.errors import NotDicom, UnsupportedTransfer


def to_uncompressed(path: Path, target: UID) -> Dataset:
    """Read the Part 10 file at ``path`` as a dataset encoded in ``target``.

    ``target`` must be Explicit or Implicit VR Little Endian.
    """
    if target.is_compressed or target.is_deflated or not target.is_little_endian:
        raise UnsupportedTransfer(f"{target.name} is not an uncompressed little endian syntax")
    try:
        ds = dcmread(path)
    except Exception as exc:
        raise NotDicom(f"stored object is not readable DICOM: {exc}") from exc
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if stored.is_compressed and stored != DeflatedExplicitVRLittleEndian:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:
            raise UnsupportedTransfer(
                f"cannot decompress {stored.name} ({stored}): {exc}; "
                "the receiver must accept the stored transfer syntax"
            ) from exc
    ds.file_meta.TransferSyntaxUID = target
    # Convert every still-raw element, so pydicom re-encodes them instead of copying
    # their original bytes; then pynetdicom accepts the dataset under the new syntax.
    ds.walk(lambda dataset, element: None)
    ds.set_original_encoding(
        target.is_implicit_VR, target.is_little_endian, ds.original_character_set
    )
    return ds


UNCOMPRESSED = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
LOSSLESS_ENCODABLE = frozenset({RLELossless, JPEGLSLossless, JPEG2000Lossless})
ENCODABLE = LOSSLESS_ENCODABLE | {JPEGLSNearLossless, JPEG2000}
"""Compressed syntaxes micropacs can write (decoding covers every image syntax)."""


ANY_SYNTAX = "*"
"""What a receiver accepts when any transfer syntax will do (PS3.18 8.7.3.5.2)."""


def can_produce(stored: str, target: str) -> bool:
    """Whether an object stored as ``stored`` can be served as ``target``."""
    return target == stored or target in UNCOMPRESSED or target in ENCODABLE


def choose_syntax(stored: str, accepted: Collection[str]) -> str | None:
    """The syntax to send an object stored as ``stored`` in, to a receiver that accepts
    ``accepted``; None when micropacs can produce none of them.

    One policy for C-GET, C-MOVE and WADO-RS: as stored when accepted (or
    when any syntax is), so no byte is re-encoded; else Explicit, then Implicit
    VR Little Endian (PS3.5 A.2, A.1: every receiver's baseline); else a
    compressed syntax micropacs can encode.
    """
    if ANY_SYNTAX in accepted or stored in accepted:
        return stored
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, *sorted(ENCODABLE)):
        if syntax in accepted and can_produce(stored, syntax):
            return str(syntax)
    return None


def to_syntax(path: Path, target: UID) -> Dataset:
    """Read the Part 10 file at ``path`` as a dataset encoded in ``target``.

    Compressing needs pixel data the encoder supports (e.g. RLE: up to 16
    bits, no more than 3 samples); otherwise :class:`UnsupportedTransfer`.
    """
    if target in UNCOMPRESSED:
        return to_uncompressed(path, target)
    if target not in ENCODABLE:
        raise UnsupportedTransfer(f"micropacs cannot encode {target.name} ({target})")
    ds = to_uncompressed(path, ExplicitVRLittleEndian)
    if "PixelData" not in ds:
        raise UnsupportedTransfer(f"{target.name} needs pixel data; this object has none")
    try:
        ds.compress(target, generate_instance_uid=False)
    except Exception as exc:
        raise UnsupportedTransfer(f"cannot encode this image as {target.name}: {exc}") from exc
    return ds


AT_REST = {
    "rle": RLELossless,
    "jpeg-ls": JPEGLSLossless,
    "jpeg2000": JPEG2000Lossless,
}
"""The lossless syntaxes a storage group can compress into (``storage.compression``)."""


def compress_file(path: Path, target: UID, out: Path) -> bool:
    """Write the uncompressed image at ``path`` to ``out`` losslessly compressed as ``target``.

    False (and nothing written) when the object is not an uncompressed image
    or the encoder cannot take it: then it is stored as received.
    """
    ds = dcmread(path)
    stored = UID(ds.file_meta.TransferSyntaxUID)
    if stored.is_compressed or "PixelData" not in ds:
        return False
    try:
        ds.compress(target, generate_instance_uid=False)
    except Exception:  # noqa: BLE001 - any encoder refusal means: keep it as it came
        return False
    ds.save_as(out, enforce_file_format=True)
    return True
