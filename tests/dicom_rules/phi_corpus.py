"""A planted-PHI corpus: CT instances carrying known identifying values in known places.

Every value of :data:`PLANTED` (names, IDs, free text, addresses, device and
institution identity) and every UID of :data:`PLANTED_UIDS` is written into
each instance that :func:`planted_dataset` builds: in top-level attributes, in
sequences that PS3.15 Table E.1-1 lists (Other Patient IDs, Request
Attributes, Referenced Image, Source Image, Referenced Study, Referenced
Performed Procedure Step), in sequences it does not list (Anatomic Region
Sequence and a nested Anatomic Region Modifier Sequence), in a private block
(group 0029, creator ``PLANT PRIVATE``: an LO element and a private sequence
holding a PN), in the overlay (6000,0022) and in a curve (5000,0022).
After de-identification with the Annex E Basic Profile (or with dicognito,
for the benchmark), :func:`surviving` names the planted values still found in
the output bytes; it should find none.

Data that is not PHI is planted alongside, to check that it is kept: a
diffusion b-value in a private block that the safe-private list keeps (group
0019, ``SIEMENS MR HEADER``, element 0C), coded concepts, age, sex, size and
weight, and the dates of two studies of the same patient (:data:`STUDY_DATES`)
whose interval must survive a per-patient date shift. Study 1 suffixes the
per-study values (UIDs, accession, IDs) of study 0, so each still contains
its planted value. Nothing here comes from a real patient.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from tests.factory import _with_meta

PLANTED: dict[str, str] = {
    "patient_name": "NGUYEN^THI PHI",
    "patient_name_vietnamese": "NGUYỄN^THỊ PHI",
    "other_patient_name": "PLANTALIAS^MAI LAN",
    "patient_id": "MRN-PLANT-0042",
    "issuer_of_patient_id": "BV-PLANTISSUER",
    "citizen_id": "079123456789",
    "insurance_number": "BHYT-DN4790123456789",
    "patient_birth_date": "19600415",
    "patient_address": "SO 12 PHO PLANT, HA NOI",
    "patient_telephone": "+84-90-5551234",
    "mother_birth_name": "TRAN^THI PLANTMOTHER",
    "occupation": "PLANTOCCUPATION",
    "patient_comments": "PLANTCOMMENT prefers calls to her daughter",
    "additional_patient_history": "PLANTHISTORY fall at home, NGUYEN THI PHI lives alone",
    "accession_number": "ACC-PLANT-77",
    "study_id": "STUDY-PLANT-31",
    "study_description": "CT head for NGUYEN THI PHI",
    "series_description": "Axial 5mm by TECH PLANTOPER",
    "image_comments": "Compare with prior, MRN-PLANT-0042",
    "referring_physician": "DR^PLANTREF",
    "requesting_physician": "DR^PLANTREQ",
    "performing_physician": "DR^PLANTPERF",
    "reading_physician": "DR^PLANTREAD",
    "operator_name": "TECH^PLANTOPER",
    "scheduled_performing_physician": "DR^PLANTSCHED",
    "requested_procedure_id": "RP-PLANT-5501",
    "scheduled_procedure_step_id": "SPS-PLANT-6602",
    "performed_procedure_step_id": "PPS-PLANT-7703",
    "institution_name": "BENH VIEN PLANTHOSP",
    "institution_address": "99 DUONG PLANTHOSP, DA NANG",
    "department": "KHOA PLANTDEPT",
    "station_name": "PLANTSTATION",
    "device_serial_number": "SN-PLANT-9981",
    "private_text": "PLANT-PRIVATE-LO-31337",
    "private_sequence_name": "PRIV^PLANTNAME",
    "unlisted_sequence_creator": "CREATOR^PLANTANAT",
    "unlisted_nested_name": "OBSERVER^PLANTNESTED",
    "unlisted_nested_text": "PLANTNESTED-LO-4242",
    "overlay_description": "PLANTOVERLAY ANNOTATION",
    "curve_description": "PLANTCURVE TRACE",
}

UID_ROOT = "1.2.826.0.1.3680043.10.1337.99."

PLANTED_UIDS: dict[str, str] = {
    "study_instance": UID_ROOT + "314159",
    "series_instance": UID_ROOT + "271828",
    "sop_instance": UID_ROOT + "161803",
    "frame_of_reference": UID_ROOT + "141421",
    "referenced_image": UID_ROOT + "173205",
    "source_image": UID_ROOT + "223606",
    "referenced_study": UID_ROOT + "264575",
    "referenced_pps": UID_ROOT + "282842",
}

STUDY_DATES: tuple[str, str] = ("20240110", "20240315")

PRIVATE_GROUP = 0x0029
PRIVATE_CREATOR = "PLANT PRIVATE"
SAFE_PRIVATE_GROUP = 0x0019
SAFE_PRIVATE_CREATOR = "SIEMENS MR HEADER"
B_VALUE_ELEMENT = 0x0C

_STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.2"
_MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
_TOP_LEVEL = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "PatientBirthDate": "patient_birth_date",
    "PatientAddress": "patient_address",
    "PatientTelephoneNumbers": "patient_telephone",
    "PatientMotherBirthName": "mother_birth_name",
    "Occupation": "occupation",
    "AdditionalPatientHistory": "additional_patient_history",
    "PatientComments": "patient_comments",
    "StudyDescription": "study_description",
    "ReferringPhysicianName": "referring_physician",
    "RequestingPhysician": "requesting_physician",
    "NameOfPhysiciansReadingStudy": "reading_physician",
    "SeriesDescription": "series_description",
    "PerformingPhysicianName": "performing_physician",
    "OperatorsName": "operator_name",
    "InstitutionName": "institution_name",
    "InstitutionAddress": "institution_address",
    "InstitutionalDepartmentName": "department",
    "StationName": "station_name",
    "DeviceSerialNumber": "device_serial_number",
    "ImageComments": "image_comments",
}
_PIXEL_SPACING = 0.5
_SLICE_SPACING = 5.0


def planted_dataset(
    index: int = 0,
    *,
    rows: int = 512,
    columns: int = 512,
    charset: str = "ISO_IR 192",
    study: int = 0,
) -> Dataset:
    """Instance ``index`` of the CT series of study ``study`` (0 or 1), with every planted value."""
    if study not in range(len(STUDY_DATES)):
        raise ValueError(f"study must be 0 or 1, not {study}")
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    for keyword, key in _TOP_LEVEL.items():
        setattr(ds, keyword, PLANTED[key])
    _patient(ds, charset)
    _study(ds, study)
    _image(ds, index, study, rows, columns)
    _references(ds)
    _unlisted_sequence(ds)
    _private_blocks(ds)
    _overlay_and_curve(ds, rows, columns)
    return _with_meta(ds)


def expected_planted(charset: str = "ISO_IR 192") -> list[str]:
    """Names of the planted values that a dataset built with ``charset`` carries."""
    names = set(PLANTED) | set(PLANTED_UIDS)
    if not _encodable(PLANTED["patient_name_vietnamese"], charset):
        names.discard("patient_name_vietnamese")
    return sorted(names)


def part10_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_corpus(folder: Path, count: int, **kw: object) -> list[Path]:
    """Writes instances 0..count-1 as Part 10 files; ``kw`` goes to :func:`planted_dataset`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"study{kw.get('study', 0)}_{index:05d}.dcm"
        path.write_bytes(part10_bytes(planted_dataset(index, **kw)))
        paths.append(path)
    return paths


def surviving(data: bytes) -> list[str]:
    """Sorted names (from PLANTED and PLANTED_UIDS) of the planted values found in ``data``."""
    planted = {**PLANTED, **PLANTED_UIDS}
    return sorted(name for name, value in planted.items() if any(n in data for n in _needles(value)))


@cache
def _needles(value: str) -> frozenset[bytes]:
    spellings = {value}
    if "^" in value:
        for text in (value, value.replace("^", " ")):
            spellings |= {text, text.upper(), text.lower(), text.title()}
    encoded = {text.encode("utf-8") for text in spellings}
    return frozenset(encoded | {t.encode("latin-1") for t in spellings if _encodable(t, "ISO_IR 100")})


def _encodable(text: str, charset: str) -> bool:
    try:
        text.encode(python_encoding.get(charset, "ascii"))
    except UnicodeEncodeError:
        return False
    return True


def _per_study(value: str, study: int, separator: str = "-") -> str:
    return value if study == 0 else f"{value}{separator}{study + 1}"


def _patient(ds: Dataset, charset: str) -> None:
    ds.OtherPatientIDsSequence = Sequence(
        [_other_id(PLANTED["citizen_id"], "CCCD"), _other_id(PLANTED["insurance_number"], "BHYT")]
    )
    others = [PLANTED["patient_name_vietnamese"], PLANTED["other_patient_name"]]
    ds.OtherPatientNames = [name for name in others if _encodable(name, charset)]
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.PatientSize = "1.55"
    ds.PatientWeight = "58.5"


def _other_id(value: str, issuer: str) -> Dataset:
    item = Dataset()
    item.PatientID = value
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    return item


def _study(ds: Dataset, study: int) -> None:
    date = STUDY_DATES[study]
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate"):
        setattr(ds, keyword, date)
    ds.StudyTime = "101500"
    ds.SeriesTime = "101812"
    ds.AcquisitionTime = "101815"
    ds.StudyInstanceUID = _per_study(PLANTED_UIDS["study_instance"], study, ".")
    ds.SeriesInstanceUID = _per_study(PLANTED_UIDS["series_instance"], study, ".")
    ds.FrameOfReferenceUID = _per_study(PLANTED_UIDS["frame_of_reference"], study, ".")
    ds.AccessionNumber = _per_study(PLANTED["accession_number"], study)
    ds.StudyID = _per_study(PLANTED["study_id"], study)
    ds.PerformedProcedureStepID = _per_study(PLANTED["performed_procedure_step_id"], study)
    request = Dataset()
    request.AccessionNumber = ds.AccessionNumber
    request.RequestedProcedureID = _per_study(PLANTED["requested_procedure_id"], study)
    request.ScheduledProcedureStepID = _per_study(PLANTED["scheduled_procedure_step_id"], study)
    request.ScheduledPerformingPhysicianName = PLANTED["scheduled_performing_physician"]
    ds.RequestAttributesSequence = Sequence([request])
    ds.ProcedureCodeSequence = Sequence([_code("30799-1", "LN", "CT Head WO contrast")])


def _image(ds: Dataset, index: int, study: int, rows: int, columns: int) -> None:
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{PLANTED_UIDS['sop_instance']}.{study + 1}.{index + 1}"
    ds.Modality = "CT"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "SOMATOM Plant"
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = index + 1
    ds.ContentTime = f"1018{20 + index % 40:02d}"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.BurnedInAnnotation = "NO"
    ds.KVP = "120"
    ds.SliceThickness = str(_SLICE_SPACING)
    z = _SLICE_SPACING * -index
    ds.ImagePositionPatient = [-_PIXEL_SPACING * columns / 2, -_PIXEL_SPACING * rows / 2, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z
    ds.PixelSpacing = [_PIXEL_SPACING, _PIXEL_SPACING]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    ds.PixelData = _phantom(rows, columns, index).tobytes()


def _phantom(rows: int, columns: int, index: int) -> np.ndarray:
    y, x = np.mgrid[:rows, :columns]
    dx = (x - (columns - 1) / 2) / columns
    radius = np.hypot(dx, (y - (rows - 1) / 2) / rows)
    skull = 0.40 - 0.003 * (index % 10)
    brain = radius < skull - 0.03
    hu = np.full((rows, columns), -1000, dtype=np.int32)
    hu[radius < skull] = 1200
    hu[brain] = 35 + np.round(20 * dx[brain]).astype(np.int32)
    hu[radius >= 0.5] = -3024
    return (hu + 1024).astype("<i2")


def _references(ds: Dataset) -> None:
    for keyword, sop_class, key in (
        ("ReferencedImageSequence", CTImageStorage, "referenced_image"),
        ("SourceImageSequence", CTImageStorage, "source_image"),
        ("ReferencedStudySequence", _STUDY_COMPONENT_CLASS, "referenced_study"),
        ("ReferencedPerformedProcedureStepSequence", _MPPS_CLASS, "referenced_pps"),
    ):
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = PLANTED_UIDS[key]
        setattr(ds, keyword, Sequence([item]))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _unlisted_sequence(ds: Dataset) -> None:
    modifier = _code("255503000", "SCT", "Entire")
    modifier.PersonName = PLANTED["unlisted_nested_name"]
    modifier.ContentDescription = PLANTED["unlisted_nested_text"]
    region = _code("69536005", "SCT", "Head")
    region.ContentCreatorName = PLANTED["unlisted_sequence_creator"]
    region.AnatomicRegionModifierSequence = Sequence([modifier])
    ds.AnatomicRegionSequence = Sequence([region])


def _private_blocks(ds: Dataset) -> None:
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", PLANTED["private_text"])
    item = Dataset()
    item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True).add_new(
        0x10, "PN", PLANTED["private_sequence_name"]
    )
    block.add_new(0x02, "SQ", Sequence([item]))
    siemens = ds.private_block(SAFE_PRIVATE_GROUP, SAFE_PRIVATE_CREATOR, create=True)
    siemens.add_new(B_VALUE_ELEMENT, "IS", "1000")


def _overlay_and_curve(ds: Dataset, rows: int, columns: int) -> None:
    mask = np.zeros((rows, columns), dtype=np.uint8)
    mask[rows // 8 : rows // 8 + max(rows // 16, 1), columns // 8 : columns // 2] = 1
    for element, vr, value in (
        (0x0010, "US", rows),
        (0x0011, "US", columns),
        (0x0022, "LO", PLANTED["overlay_description"]),
        (0x0040, "CS", "G"),
        (0x0050, "SS", [1, 1]),
        (0x0100, "US", 1),
        (0x0102, "US", 0),
        (0x3000, "OW", pack_bits(mask.ravel())),
    ):
        ds.add_new(0x60000000 | element, vr, value)
    ds.add_new(0x50000022, "LO", PLANTED["curve_description"])
