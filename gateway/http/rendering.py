"""Rendering a frame to an 8-bit JPEG or PNG: modality LUT, window (VOI), inversion, viewport.

Used by WADO-RS ``/rendered`` and ``/thumbnail`` and by WADO-URI. Compressed
pixel data is decoded on the server (pydicom with the pylibjpeg and openjpeg
codecs), so browsers only ever receive images they can show.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array

JPEG, PNG = "image/jpeg", "image/png"


class RenderError(ValueError):
    pass


@dataclass(frozen=True)
class RenderRequest:
    frame: int = 1  # 1-based
    window: tuple[float, float] | None = None  # center, width
    viewport: tuple[int, int] | None = None  # columns, rows the image must fit in
    media_type: str = JPEG
    quality: int = 90


def _windowed(values: np.ndarray, ds: Dataset, window: tuple[float, float] | None) -> np.ndarray:
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        first = lambda v: float(v[0]) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else float(v)  # noqa: E731
        window = (first(ds.WindowCenter), first(ds.WindowWidth))
    if window is None:
        low, high = float(values.min()), float(values.max())
    else:
        center, width = window
        low, high = center - width / 2, center + width / 2
    scaled = (values.astype(np.float32) - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def render(ds: Dataset, request: RenderRequest) -> bytes:
    frames = int(ds.get("NumberOfFrames") or 1)
    if not 1 <= request.frame <= frames:
        raise RenderError(f"the instance has {frames} frame(s)")
    if "PixelData" not in ds:
        raise RenderError("the instance has no pixel data")
    pixels = pixel_array(ds, index=request.frame - 1) if frames > 1 else ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        image = _windowed(apply_modality_lut(pixels, ds), ds, request.window)
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            image = 255 - image
        picture = Image.fromarray(image, mode="L")
    else:
        picture = Image.fromarray(pixels.astype(np.uint8), mode="RGB")
    if request.viewport is not None:
        picture.thumbnail(request.viewport, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if request.media_type == PNG:
        picture.save(out, format="PNG")
    else:
        picture.save(out, format="JPEG", quality=request.quality)
    return out.getvalue()
