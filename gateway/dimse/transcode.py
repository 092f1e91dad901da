"""Re-encoding a stored instance for a peer that does not take its stored transfer syntax.

The archive keeps every instance as received. A peer that accepts only
uncompressed syntaxes (a C-MOVE destination such as ``storescp +xi``, a C-GET
requester, a DICOMweb client that did not ask for ``transfer-syntax=*``) gets
it decoded and re-encoded in Explicit or Implicit VR Little Endian, with the
binary values of a Big Endian source swapped. When the pixel data cannot be
decoded, :class:`ConversionError` says why; the instance is never sent half
converted.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.dimse.part10 import file_meta

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Binary values pydicom keeps as raw bytes, by the size of the words to swap between byte orders.
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class ConversionError(ValueError):
    """The instance cannot be sent in the transfer syntax asked for; the text says why."""


def read_part10(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data))


def _swap_words(ds: Dataset) -> None:
    """Swap the raw multi-byte values of a dataset read from Big Endian, at every depth."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _swap_words(item)
        elif element.VR in _WORD_SIZE and element.value:
            size = _WORD_SIZE[element.VR]
            if element.tag == 0x7FE00010 and int(ds.get("BitsAllocated", 16)) <= 8:
                continue  # 8-bit pixel data is bytes in either order
            raw = bytes(element.value)
            words = np.frombuffer(raw[: len(raw) // size * size], dtype=f">u{size}")
            ds[element.tag] = DataElement(element.tag, element.VR, words.astype(f"<u{size}").tobytes())


def dataset_bytes(stored: bytes, stored_syntax: str, wanted_syntax: str) -> bytes:
    """The dataset of a stored Part 10 file (no file meta), in the wanted transfer syntax; raises ConversionError."""
    if stored_syntax == wanted_syntax:
        meta_length = int.from_bytes(stored[140:144], "little")  # (0002,0000) right after the preamble and DICM
        return stored[144 + meta_length :]
    if wanted_syntax not in UNCOMPRESSED:
        raise ConversionError(f"cannot convert {UID(stored_syntax).name} to {UID(wanted_syntax).name}")
    try:
        ds = read_part10(stored)
    except Exception as exc:
        raise ConversionError(f"the stored object is not readable DICOM ({type(exc).__name__})") from exc
    source = UID(stored_syntax)
    if source.is_compressed:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # each codec raises its own kind
            raise ConversionError(f"the pixel data ({source.name}) cannot be decoded: {_first_line(exc)}") from exc
    elif not source.is_little_endian:
        _swap_words(ds)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = UID(wanted_syntax).is_implicit_VR
    try:
        write_dataset(fp, ds)
    except Exception as exc:
        raise ConversionError(f"cannot encode the instance as {UID(wanted_syntax).name}: {_first_line(exc)}") from exc
    return fp.getvalue()


def part10_in(stored: bytes, stored_syntax: str, wanted: str, sop_class: str, sop_instance: str) -> tuple[bytes, str]:
    """A whole Part 10 file in ``wanted`` (``*`` for as stored), and the syntax it is in; raises ConversionError."""
    if wanted in ("*", stored_syntax):
        return stored, stored_syntax
    return file_meta(sop_class, sop_instance, wanted, "") + dataset_bytes(stored, stored_syntax, wanted), wanted


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:200] or type(exc).__name__
