"""Parse and validate one received DICOM instance into what the index keeps.

Everything an instance needs to be stored and indexed is checked here, before
the sender is told Success, so the spool worker can never meet an instance it
cannot file.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicom_rules.values import text_value
from gateway.statuses import StoreStatus
from gateway.storage_classes import image_storage_classes, storage_classes
from gateway.ingest.metadata import instance_metadata
from storage.index.records import InstanceRecord, OtherPatientID, VaultEntry
from storage.keys import instance_key
from storage.uids import is_valid_uid


class InstanceRejected(Exception):
    """The instance cannot be accepted; carries the DIMSE status and a PHI-free reason (at most 64 characters)."""

    def __init__(self, status: StoreStatus, reason: str, offending_tag: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason[:64]
        self.offending_tag = offending_tag


@dataclass(frozen=True)
class ReceivedInstance:
    record: InstanceRecord
    data: bytes | bytearray | memoryview  # the complete DICOM Part 10 file, not copied
    vault: tuple[VaultEntry, ...] = ()  # pseudonym mappings to keep with the instance


_REQUIRED_UIDS = (
    ("SOPClassUID", 0x00080016),
    ("SOPInstanceUID", 0x00080018),
    ("StudyInstanceUID", 0x0020000D),
    ("SeriesInstanceUID", 0x0020000E),
)




def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _other_patient_ids(ds: Dataset) -> tuple[OtherPatientID, ...]:
    found = []
    for item in ds.get("OtherPatientIDsSequence") or ():
        pid = text_value(item, "PatientID")
        if pid:
            found.append(OtherPatientID(pid, text_value(item, "IssuerOfPatientID"), text_value(item, "TypeOfPatientID")))
    return tuple(found)


class _ShortReadDetector:
    """A read-only stream over the received bytes, without copying them, that counts short reads.

    pydicom accepts a value shorter than its declared length without a word.
    A complete stream ends with exactly one empty read (the next element's
    header, at the end); a partial read, or a second empty one, means the
    stream was cut inside an element.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self.partial_reads = 0
        self.empty_reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        length = len(self._view)
        start = min(self._pos, length)
        end = length if size is None or size < 0 else min(start + size, length)
        chunk = self._view[start:end].tobytes()
        if self._pos <= length:  # a seek past the end stays visible to tell()
            self._pos = start + len(chunk)
        if size is not None and size > 0 and len(chunk) < size:
            if chunk:
                self.partial_reads += 1
            else:
                self.empty_reads += 1
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


# Values longer than this (pixel data, mostly) are checked for length but not
# read: validation needs their size, not a copy of them.
_DEFER_BYTES = 64 * 1024
_UNDEFINED_LENGTH = 0xFFFFFFFF


def _is_deferred(raw: object) -> bool:
    return getattr(raw, "value", 0) is None and getattr(raw, "length", 0) not in (0, _UNDEFINED_LENGTH)


def _decode_all(ds: Dataset) -> None:
    """Decode every element, nested items too, so that decoding errors surface now."""
    for tag in list(ds.keys()):
        element = ds.get_item(tag, keep_deferred=True)
        if isinstance(element, RawDataElement):
            if _is_deferred(element):
                continue
            element = ds[tag]  # converts it (a converted element is what ds[tag] would return)
        if element.VR == "SQ":
            for item in element.value:
                _decode_all(item)
        else:
            _ = element.value


def read_dataset(data: bytes | bytearray | memoryview, *, decode_values: bool = True) -> Dataset:
    """Parse a Part 10 file completely, so that truncation and (with ``decode_values``) undecodable values are caught."""
    stream = _ShortReadDetector(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on minor non-conformance; truncation is checked below
            ds = dcmread(stream, force=False, defer_size=_DEFER_BYTES)
            if decode_values:
                _decode_all(ds)
    except InvalidDicomError:
        raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, "not a DICOM Part 10 dataset") from None
    except Exception as exc:  # pydicom raises a wide range of errors on hostile input
        raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, f"unparsable dataset ({type(exc).__name__})") from None
    # A deferred value is skipped by seeking: a stream cut inside one ends up past its end.
    if stream.partial_reads or stream.empty_reads > 1 or stream.tell() > len(data):
        raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, "truncated dataset")
    return ds


def _value_length(ds: Dataset, keyword: str) -> int:
    raw = ds.get_item(keyword, keep_deferred=True)
    if _is_deferred(raw):
        return int(getattr(raw, "length"))
    value = ds[keyword].value
    return len(value) if value is not None else 0


_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _check_pixel_data(ds: Dataset, transfer_syntax: UID) -> None:
    """An image must carry all of its pixels; a stream cut between elements is otherwise well-formed."""
    if "Rows" not in ds or "Columns" not in ds:
        if str(ds.SOPClassUID) in image_storage_classes():
            raise InstanceRejected(StoreStatus.MISSING_ATTRIBUTE, "image without Rows/Columns", 0x00280010)
        return
    present = [kw for kw in _PIXEL_KEYWORDS if kw in ds]
    if not present:
        raise InstanceRejected(StoreStatus.MISSING_ATTRIBUTE, "image without Pixel Data", 0x7FE00010)
    if present[0] != "PixelData" or transfer_syntax.is_encapsulated:
        return
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            samples = 2  # chroma shared by pixel pairs
        expected_bits = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated) * frames
    except (AttributeError, TypeError, ValueError):
        raise InstanceRejected(StoreStatus.MISSING_ATTRIBUTE, "image pixel description incomplete", 0x00280100) from None
    if _value_length(ds, "PixelData") * 8 < expected_bits:
        raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, "Pixel Data shorter than the image", 0x7FE00010)


def validate_instance(
    data: bytes | bytearray | memoryview,
    *,
    affected_sop_class: str | None = None,
    affected_sop_instance: str | None = None,
    decode_values: bool = True,
) -> Dataset:
    """Parse a complete Part 10 file and check everything storing and indexing it needs.

    ``affected_*`` are the UIDs named in the C-STORE request; the dataset must agree with them.
    ``decode_values=False`` leaves values that nothing reads undecoded: for instances about to be
    de-identified, whose every kept sequence is walked and every changed value decoded anyway.
    """
    ds = read_dataset(data, decode_values=decode_values)
    meta: FileMetaDataset = ds.file_meta
    transfer_syntax = str(meta.get("TransferSyntaxUID", ""))
    if not is_valid_uid(transfer_syntax):
        raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, "missing or invalid Transfer Syntax UID")
    for keyword, tag in _REQUIRED_UIDS:
        value = ds.get(keyword)
        if value is None or str(value) == "":
            raise InstanceRejected(StoreStatus.MISSING_ATTRIBUTE, f"{keyword} missing", tag)
        if not is_valid_uid(str(value)):
            raise InstanceRejected(StoreStatus.INVALID_UID, f"{keyword} is not a valid UID", tag)
    sop_class = str(ds.SOPClassUID)
    sop_instance = str(ds.SOPInstanceUID)
    if sop_class not in storage_classes():
        raise InstanceRejected(StoreStatus.REFUSED_SOP_CLASS, "SOP Class is not a known storage class", 0x00080016)
    if affected_sop_class is not None and sop_class != affected_sop_class:
        raise InstanceRejected(StoreStatus.DATASET_MISMATCH, "SOP Class UID differs from the request", 0x00080016)
    if affected_sop_instance is not None and sop_instance != affected_sop_instance:
        raise InstanceRejected(StoreStatus.DATASET_MISMATCH, "SOP Instance UID differs from the request", 0x00080018)
    media_instance = meta.get("MediaStorageSOPInstanceUID")
    if media_instance is not None and str(media_instance) != sop_instance:
        raise InstanceRejected(StoreStatus.DATASET_MISMATCH, "file meta SOP Instance UID differs from dataset")
    _check_pixel_data(ds, UID(transfer_syntax))
    return ds


def pixel_location(ds: Dataset) -> int | None:
    """Where uncompressed little-endian pixel data starts in the bytes ``ds`` was read from (None otherwise)."""
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    syntax = ds.file_meta.TransferSyntaxUID
    if not isinstance(raw, RawDataElement) or raw.value is not None:
        return None  # small enough to have been read: the whole object is cheap to read too
    if syntax.is_encapsulated or not syntax.is_little_endian or syntax.is_deflated:
        return None
    return int(raw.value_tell)


def frame_length(ds: Dataset) -> int | None:
    """Bytes per frame of uncompressed pixel data (None when frames do not fall on byte boundaries)."""
    bits = _int(ds, "BitsAllocated")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if not bits or bits % 8 or not rows or not columns:
        return None
    return rows * columns * (_int(ds, "SamplesPerPixel") or 1) * bits // 8


def instance_record(ds: Dataset, *, size: int, source_ae: str, pixel_offset: int | None = None) -> InstanceRecord:
    """What the index keeps of a validated dataset; ``pixel_offset`` locates uncompressed pixel data in the stored object."""
    study_uid, series_uid, sop_instance = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    try:
        return InstanceRecord(
            patient_id=text_value(ds, "PatientID"),
            issuer_of_patient_id=text_value(ds, "IssuerOfPatientID"),
            patient_name=text_value(ds, "PatientName"),
            patient_birth_date=text_value(ds, "PatientBirthDate"),
            patient_sex=text_value(ds, "PatientSex"),
            study_uid=study_uid,
            study_date=text_value(ds, "StudyDate"),
            study_time=text_value(ds, "StudyTime"),
            accession_number=text_value(ds, "AccessionNumber"),
            study_id=text_value(ds, "StudyID"),
            study_description=text_value(ds, "StudyDescription"),
            referring_physician_name=text_value(ds, "ReferringPhysicianName"),
            series_uid=series_uid,
            modality=text_value(ds, "Modality"),
            series_number=_int(ds, "SeriesNumber"),
            series_description=text_value(ds, "SeriesDescription"),
            body_part_examined=text_value(ds, "BodyPartExamined"),
            performed_start_date=text_value(ds, "PerformedProcedureStepStartDate"),
            performed_start_time=text_value(ds, "PerformedProcedureStepStartTime"),
            sop_instance_uid=sop_instance,
            sop_class_uid=str(ds.SOPClassUID),
            instance_number=_int(ds, "InstanceNumber"),
            transfer_syntax_uid=str(UID(str(ds.file_meta.TransferSyntaxUID))),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            bits_allocated=_int(ds, "BitsAllocated"),
            number_of_frames=_int(ds, "NumberOfFrames"),
            size=size,
            object_key=instance_key(study_uid, series_uid, sop_instance),
            source_ae=source_ae,
            other_patient_ids=_other_patient_ids(ds),
            metadata_json=instance_metadata(ds),
            pixel_offset=pixel_offset,
            frame_length=frame_length(ds) if pixel_offset is not None else None,
        )
    except (ValueError, TypeError, LookupError, UnicodeError) as exc:
        raise InstanceRejected(StoreStatus.CANNOT_UNDERSTAND, f"undecodable attribute ({type(exc).__name__})") from None


def parse_instance(
    data: bytes | bytearray | memoryview,
    *,
    source_ae: str = "",
    affected_sop_class: str | None = None,
    affected_sop_instance: str | None = None,
) -> ReceivedInstance:
    """Validate a complete Part 10 file and extract its index record; the bytes are kept as received."""
    ds = validate_instance(data, affected_sop_class=affected_sop_class, affected_sop_instance=affected_sop_instance)
    return ReceivedInstance(instance_record(ds, size=len(data), source_ae=source_ae, pixel_offset=pixel_location(ds)), data)
