"""Compressed synthetic instances for retrieve and WADO tests: JPEG Baseline, JPEG 2000, RLE, and broken ones.

pydicom encodes RLE and JPEG 2000 itself (the latter through pylibjpeg-openjpeg);
JPEG Baseline is made with Pillow and encapsulated here, since pydicom has no
encoder for it.
"""

from __future__ import annotations

import io
from copy import deepcopy

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit, RLELossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.factory import ct_series


def _fresh(ds: Dataset) -> Dataset:
    copy = deepcopy(ds)
    copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return copy


def jpeg_baseline(ds: Dataset) -> Dataset:
    """An 8-bit copy of ``ds`` compressed with JPEG Baseline (Process 1)."""
    out = _fresh(ds)
    pixels = (ds.pixel_array >> 4).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=90)
    out.BitsAllocated, out.BitsStored, out.HighBit = 8, 8, 7
    out.PixelData = encapsulate([buffer.getvalue()])
    out["PixelData"].VR = "OB"
    out.LossyImageCompression = "01"
    out.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return out


def compressed(ds: Dataset, syntax: str) -> Dataset:
    """A copy of ``ds`` in ``syntax``: JPEG Baseline, JPEG 2000 Lossless or RLE Lossless."""
    if syntax == JPEGBaseline8Bit:
        return jpeg_baseline(ds)
    out = _fresh(ds)
    out.compress(syntax, generate_instance_uid=False)
    return out


def undecodable(ds: Dataset) -> Dataset:
    """A copy of ``ds`` that says JPEG Extended (12-bit) but whose frame no codec can decode."""
    out = _fresh(ds)
    out.PixelData = encapsulate([b"\xff\xd8\xff\xc1\x00\x0b\x0c" + bytes(range(256)) * 4 + b"\xff\xd9"])
    out["PixelData"].VR = "OB"
    out.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    return out


def four_syntaxes(size: int = 64) -> list[Dataset]:
    """One study of four CT instances: uncompressed, JPEG Baseline, JPEG 2000 Lossless and RLE Lossless."""
    series = ct_series(4, size=size)
    return [series[0], *(compressed(ds, s) for ds, s in zip(series[1:], (JPEGBaseline8Bit, JPEG2000Lossless, RLELossless)))]


def store_as_encoded(port: int, datasets: list[Dataset]) -> None:
    """C-STORE each CT dataset to the gateway in the transfer syntax it is encoded in (one context per syntax)."""
    ae = AE(ae_title="MODALITY")
    for syntax in sorted({str(ds.file_meta.TransferSyntaxUID) for ds in datasets}):
        ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW")
    assert assoc.is_established
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
