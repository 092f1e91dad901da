"""Writing a modified dataset back to a Part 10 file, reusing the received pixel data bytes.

Pixel data is most of an image and de-identification leaves it alone, so
when it was left unread (deferred) its bytes are copied from the received
file instead of being read, decoded and written again.
"""

from __future__ import annotations

import zlib

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.part10 import file_meta

PIXEL_DATA = BaseTag(0x7FE00010)


def encode_instance(ds: Dataset, received: bytes | bytearray | memoryview | None = None) -> tuple[bytes, int | None]:
    """The dataset as a Part 10 file with fresh File Meta Information (no source AE title), and where in it
    the pixel data value starts when its received bytes were reused (else None)."""
    transfer_syntax = ds.file_meta.TransferSyntaxUID
    meta = file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(transfer_syntax), "")
    tail: bytes | memoryview = b""
    header = 0
    raw = ds._dict.get(PIXEL_DATA)
    reusable = transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    if reusable and received is not None and isinstance(raw, RawDataElement) and raw.value is None and raw.length != 0xFFFFFFFF:
        header = 8 if transfer_syntax.is_implicit_VR else 12
        tail = memoryview(received)[raw.value_tell - header : raw.value_tell + raw.length]
        for tag in [t for t in ds.keys() if t >= PIXEL_DATA]:
            del ds[tag]  # what follows pixel data is padding or signatures, neither of which may stay
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax.is_little_endian
    fp.is_implicit_VR = transfer_syntax.is_implicit_VR
    write_dataset(fp, ds)
    body = fp.getvalue()
    if transfer_syntax.is_deflated:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
    pixel_offset = len(meta) + len(body) + header if tail else None
    return b"".join((meta, body, tail)), pixel_offset
