"""Transfer syntax conversion for retrieval (PS3.5 10, A.4).

Decoding uses pydicom's pixel data handlers with the pylibjpeg plug-ins:
pylibjpeg-libjpeg (JPEG baseline/extended/lossless, JPEG-LS), pylibjpeg-openjpeg
(JPEG 2000, HTJ2K) and pylibjpeg-rle (RLE); deflate is pydicom's own. Video
syntaxes (MPEG-2, MPEG-4, HEVC) cannot be decoded to frames here: converting
them raises :class:`~micropacs.errors.UnsupportedTransfer`.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

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
