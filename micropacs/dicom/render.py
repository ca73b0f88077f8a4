"""Rendered images and thumbnails for WADO-RS (PS3.18 8.3.5, 10.4.1.1.4): JPEG or PNG.

One frame is decoded, the modality LUT (rescale) applied, then a linear VOI
window: the request's ``window``, else the object's first WindowCenter and
WindowWidth, else the frame's own range. MONOCHROME1 is inverted so bone
stays white; colour images are sent as decoded RGB.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.pixels.processing import apply_rescale
from pydicom.pixels.utils import pixel_array

from micropacs.dicom.frames import frame_count
from micropacs.errors import InvalidInput, NotFound, UnsupportedTransfer

RENDERED_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
THUMBNAIL_SIZE = 128


@dataclass(frozen=True)
class RenderOptions:
    """The presentation parameters of a rendered request."""

    media_type: str = "image/jpeg"
    window: tuple[float, float] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_options(media_type: str, params: dict[str, str]) -> RenderOptions:
    """``window=center,width[,function]``, ``viewport=vw,vh[,…]``, ``quality=1..100``."""
    try:
        window = None
        if "window" in params:
            parts = params["window"].split(",")
            window = (float(parts[0]), float(parts[1]))
            if len(parts) > 2 and parts[2].strip().lower() not in ("linear", ""):
                raise InvalidInput(f"window function {parts[2]!r}: only linear is supported")
            if window[1] < 1:
                raise InvalidInput("window width must be at least 1")
        viewport = None
        if "viewport" in params:
            parts = params["viewport"].split(",")
            viewport = (int(parts[0]), int(parts[1]))
            if min(viewport) < 1 or max(viewport) > 8192:
                raise InvalidInput("viewport sizes must be 1 to 8192 pixels")
        quality = int(params.get("quality", "90"))
    except (ValueError, IndexError):
        raise InvalidInput(f"malformed rendering parameters {params}") from None
    if not 1 <= quality <= 100:
        raise InvalidInput("quality must be 1 to 100")
    return RenderOptions(media_type, window, viewport, quality)


def _window(values: npt.NDArray[np.float64], ds: Dataset, options: RenderOptions) -> np.ndarray:
    if options.window is not None:
        center, width = options.window
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = max(float(np.atleast_1d(ds.WindowWidth)[0]), 1.0)
    else:
        low, high = float(values.min()), float(values.max())
        center, width = (low + high) / 2, max(high - low, 1.0)
    scaled = ((values - (center - 0.5)) / (width - 1 if width > 1 else 1) + 0.5) * 255
    return np.clip(scaled, 0, 255).astype(np.uint8)


def render(path: Path, frame: int, options: RenderOptions) -> bytes:
    """Frame ``frame`` (1-based) of the image at ``path``, encoded as asked."""
    ds = dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds:
        raise NotFound("this instance has no image to render")
    count = frame_count(ds)
    if not 1 <= frame <= count:
        raise NotFound(f"frame {frame} does not exist; this image has {count}")
    try:
        pixels = pixel_array(path, index=frame - 1)
    except Exception as exc:
        raise UnsupportedTransfer(f"cannot decode this image: {exc}") from exc
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        values = np.asarray(apply_rescale(pixels, ds), dtype=np.float64)
        grey = _window(values, ds, options)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            grey = 255 - grey
        image = Image.fromarray(grey)
    else:
        if pixels.dtype != np.uint8:
            top = max(float(pixels.max()), 1.0)
            pixels = (pixels.astype(np.float64) * 255 / top).astype(np.uint8)
        image = Image.fromarray(pixels)
    if options.viewport is not None:
        image.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    kind = RENDERED_TYPES[options.media_type]
    if kind == "JPEG":
        image.save(out, kind, quality=options.quality)
    else:
        image.save(out, kind)
    return out.getvalue()
