"""Blanking rectangular pixel regions that hold burned-in text (Clean Pixel Data Option).

Compressed pixel data is decoded first (pydicom with the pylibjpeg and
openjpeg codecs), so a blanked instance is stored uncompressed in Explicit VR
Little Endian.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian


class BlankingError(ValueError):
    """The pixel data could not be decoded or does not cover a region."""


def blank_regions(ds: Dataset, regions: Sequence[tuple[int, int, int, int]]) -> None:
    """Fill each (x, y, width, height) region of every frame with the darkest value, in place."""
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    try:
        if transfer_syntax.is_compressed:
            ds.decompress(generate_instance_uid=False)
        pixels = ds.pixel_array.copy()
    except Exception as exc:  # codecs raise many kinds of errors
        raise BlankingError(f"cannot decode pixel data to blank it ({type(exc).__name__})") from None
    rows, columns = int(ds.Rows), int(ds.Columns)
    color = int(ds.get("SamplesPerPixel", 1)) > 1
    monochrome1 = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    fill = pixels.max() if monochrome1 else (0 if color else pixels.min())
    for x, y, width, height in regions:
        if x >= columns or y >= rows:
            raise BlankingError(f"region at ({x}, {y}) lies outside the {columns}x{rows} image")
        if color:
            pixels[..., y : y + height, x : x + width, :] = fill
        else:
            pixels[..., y : y + height, x : x + width] = fill
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) <= 8 else "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
