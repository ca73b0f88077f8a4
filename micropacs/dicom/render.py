"""Rendered images and thumbnails for WADO-RS (PS3.18 8.3.5, 10.4.1.1.4): JPEG or PNG.

One frame is decoded, in its own pixel type, the modality LUT (rescale)
applied, then a linear VOI window (PS3.3 C.11.2.1.2.1): the request's
``window``, else the object's first WindowCenter and WindowWidth, else the
frame's own range. MONOCHROME1 is inverted so bone
stays white; colour images are sent as decoded RGB. Memory is bounded by the
one frame: larger than :data:`MAX_RENDER_PIXELS`, it is refused before decoding.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
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
MAX_RENDER_PIXELS = 1 << 25
"""The largest frame (Rows x Columns) rendered: 32 Mi pixels, a 64 MiB 16-bit frame,
bigger than any CR, DX or mammogram; a larger one is refused before it is decoded."""
STRIP_ROWS = 256
"""Rows windowed at a time, so the float32 values of only a strip exist at once."""


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


def _strips(pixels: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for first in range(0, pixels.shape[0], STRIP_ROWS):
        yield first, pixels[first : first + STRIP_ROWS]


def _modality(strip: np.ndarray, ds: Dataset) -> npt.NDArray[np.float32]:
    return np.asarray(apply_rescale(strip, ds), dtype=np.float32)


def _window(pixels: np.ndarray, ds: Dataset, options: RenderOptions) -> npt.NDArray[np.uint8]:
    """The linear VOI window (PS3.3 C.11.2.1.2.1) of the modality values, strip by strip."""
    if options.window is not None:
        center, width = options.window
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = max(float(np.atleast_1d(ds.WindowWidth)[0]), 1.0)
    else:
        low, high = np.inf, -np.inf
        for _, strip in _strips(pixels):
            values = _modality(strip, ds)
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        center, width = (low + high) / 2, max(high - low, 1.0)
    grey = np.empty(pixels.shape, dtype=np.uint8)
    lower, span = center - 0.5, width - 1 if width > 1 else 1
    for first, strip in _strips(pixels):
        scaled = (_modality(strip, ds) - np.float32(lower)) * np.float32(255 / span) + 127.5
        grey[first : first + len(strip)] = np.clip(scaled, 0, 255)
    return grey


def _to_bytes(pixels: np.ndarray) -> npt.NDArray[np.uint8]:
    """Colour samples of more than 8 bits scaled to 0..255, strip by strip."""
    if pixels.dtype == np.uint8:
        return pixels
    factor = np.float32(255 / max(float(pixels.max()), 1.0))
    out = np.empty(pixels.shape, dtype=np.uint8)
    for first, strip in _strips(pixels):
        out[first : first + len(strip)] = np.clip(strip.astype(np.float32) * factor, 0, 255)
    return out


def _reduce(pixels: np.ndarray, viewport: tuple[int, int] | None) -> np.ndarray:
    """Shrink by the largest whole factor that keeps the image at least the viewport's size,
    averaging blocks (in float32), so windowing and resampling see few pixels."""
    if viewport is None:
        return pixels
    rows, cols = pixels.shape[:2]
    factor = int(max(cols / viewport[0], rows / viewport[1]))
    if factor < 2:
        return pixels
    height, width = rows // factor, cols // factor
    blocks = pixels[: height * factor, : width * factor].reshape(
        height, factor, width, factor, *pixels.shape[2:]
    )
    reduced: np.ndarray = blocks.mean(axis=(1, 3), dtype=np.float32)
    return reduced


def check_size(ds: Dataset) -> None:
    """Refuse, before decoding, a frame larger than :data:`MAX_RENDER_PIXELS`."""
    pixels = int(ds.Rows) * int(ds.Columns)
    if pixels > MAX_RENDER_PIXELS:
        raise InvalidInput(
            f"a frame of {int(ds.Columns)}x{int(ds.Rows)} pixels is larger than the "
            f"{MAX_RENDER_PIXELS} pixels rendered; retrieve its frames instead"
        )


def render(path: Path, frame: int, options: RenderOptions) -> bytes:
    """Frame ``frame`` (1-based) of the image at ``path``, encoded as asked.

    Only that frame is decoded, in its own pixel type; the rescale and window
    run in float32 on strips of rows, after any shrinking a viewport allows.
    """
    ds = dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds:
        raise NotFound("this instance has no image to render")
    count = frame_count(ds)
    if not 1 <= frame <= count:
        raise NotFound(f"frame {frame} does not exist; this image has {count}")
    check_size(ds)
    try:
        pixels = pixel_array(path, index=frame - 1)
    except Exception as exc:
        raise UnsupportedTransfer(f"cannot decode this image: {exc}") from exc
    pixels = _reduce(pixels, options.viewport)
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        grey = _window(pixels, ds, options)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            np.subtract(255, grey, out=grey)
        image = Image.fromarray(grey)
    else:
        image = Image.fromarray(_to_bytes(pixels))
    del pixels
    if options.viewport is not None:
        image.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    kind = RENDERED_TYPES[options.media_type]
    if kind == "JPEG":
        image.save(out, kind, quality=options.quality)
    else:
        image.save(out, kind)
    return out.getvalue()
