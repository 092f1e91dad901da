"""Synthetic DICOM data for the tests and benchmarks; nothing here comes from a real patient.

- ``ct_series``: a CT series of 16-bit 512x512 (or smaller) slices with a
  Vietnamese patient name in UTF-8 (ISO_IR 192), a hospital MRN, a 12-digit
  citizen ID and a health-insurance number in Other Patient IDs Sequence.
- ``distinct_slices``: a CT series whose every slice is a flat level of its own,
  so that a test can tell from the pixels alone which slice is on screen.
- ``latin1_instance``: an MR slice whose name is encoded in ISO_IR 100.
- ``write_files``: writes datasets as DICOM Part 10 files.
- Bad inputs (``truncated``, ``without``, ``with_bad_uid``) derive from a good
  dataset so that each carries exactly one defect.
"""

from __future__ import annotations

import io
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

VIETNAMESE_NAME = "Nguyễn^Văn An"
CITIZEN_ID = "079203001234"  # 12-digit national citizen ID (CCCD)
INSURANCE_NUMBER = "DN4797912345678"  # health-insurance card number


@dataclass(frozen=True)
class Patient:
    patient_id: str = "MRN-0001"
    name: str = VIETNAMESE_NAME
    birth_date: str = "19800101"
    sex: str = "M"
    citizen_id: str = CITIZEN_ID
    insurance_number: str = INSURANCE_NUMBER


def _pixels(rows: int, columns: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4096, (rows, columns), dtype=np.uint16).tobytes()


def ct_series(
    count: int,
    *,
    patient: Patient = Patient(),
    study_uid: str | None = None,
    series_uid: str | None = None,
    accession: str = "ACC0001",
    study_date: str = "20240315",
    size: int = 64,
    seed: int = 0,
) -> list[Dataset]:
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    pixels = _pixels(size, size, seed)
    out = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientName = patient.name
        ds.PatientID = patient.patient_id
        ds.IssuerOfPatientID = "BV-CHORAY"
        ds.PatientBirthDate = patient.birth_date
        ds.PatientSex = patient.sex
        others = []
        for value, kind in ((patient.citizen_id, "CCCD"), (patient.insurance_number, "BHYT")):
            item = Dataset()
            item.PatientID = value
            item.IssuerOfPatientID = kind
            item.TypeOfPatientID = "TEXT"
            others.append(item)
        ds.OtherPatientIDsSequence = Sequence(others)
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.AccessionNumber = accession
        ds.StudyID = "1"
        ds.StudyDescription = "CT ngực"
        ds.ReferringPhysicianName = "Trần^Thị Bình"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.SeriesDescription = "Axial 5mm"
        ds.BodyPartExamined = "CHEST"
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [0.0, 0.0, float(number) * 5.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 5.0
        ds.Rows = size
        ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = pixels
        out.append(_with_meta(ds))
    return out


def distinct_slices(count: int, *, first_hu: int = -135, step: int = 15, **series: Any) -> list[Dataset]:
    """A CT series (``ct_series`` options) whose slice n is flat at HU ``first_hu + step * (n - 1)``, with a window
    of 40/400 in its header: under that window every slice has a grey level of its own."""
    datasets = ct_series(count, **series)
    for number, ds in enumerate(datasets, start=1):
        stored = first_hu + step * (number - 1) - int(ds.RescaleIntercept)
        ds.PixelData = np.full((ds.Rows, ds.Columns), stored, dtype=np.uint16).tobytes()
        ds.WindowCenter, ds.WindowWidth = 40, 400
    return datasets


def latin1_instance(name: str = "Müller^Jürgen", patient_id: str = "MRN-LATIN") -> Dataset:
    ds = ct_series(1, patient=Patient(patient_id=patient_id, name=name), size=16, study_date="20230610", accession="ACC-LATIN")[0]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.StudyDescription = "MR genou"
    ds.ReferringPhysicianName = "Dupont^René"
    del ds.OtherPatientIDsSequence
    return ds


def _with_meta(ds: Dataset) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_files(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(datasets):
        path = folder / f"{number:05d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def truncated(ds: Dataset, keep: float = 0.6) -> bytes:
    data = to_bytes(ds)
    return data[: int(len(data) * keep)]


def without(ds: Dataset, keyword: str) -> Dataset:
    copy = _with_meta(deepcopy(ds))
    copy.SOPInstanceUID = generate_uid()
    copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
    delattr(copy, keyword)
    return copy


def with_bad_uid(ds: Dataset, keyword: str, value: str = "1.2.03.abc") -> Dataset:
    copy = _with_meta(deepcopy(ds))
    copy.SOPInstanceUID = generate_uid()
    copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
    setattr(copy, keyword, value)
    if keyword == "SOPInstanceUID":
        copy.file_meta.MediaStorageSOPInstanceUID = value
    return copy
