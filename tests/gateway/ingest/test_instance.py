from __future__ import annotations

import os

import pydicom
import pytest
from pydicom.uid import MRImageStorage

from gateway.statuses import StoreStatus
from gateway.ingest.instance import InstanceRejected, parse_instance
from tests.factory import VIETNAMESE_NAME, ct_series, latin1_instance, to_bytes, truncated, with_bad_uid, without

CHARSETS = os.path.join(os.path.dirname(pydicom.__file__), "data", "charset_files")


def test_record_carries_what_the_index_needs() -> None:
    ds = ct_series(1)[0]
    record = parse_instance(to_bytes(ds), source_ae="CT01").record
    assert record.patient_name == VIETNAMESE_NAME
    assert record.study_uid == ds.StudyInstanceUID and record.series_uid == ds.SeriesInstanceUID
    assert record.modality == "CT" and record.instance_number == 1 and record.rows == 64
    assert record.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert record.object_key.endswith(f"/instances/{ds.SOPInstanceUID}.dcm")
    assert [o.issuer for o in record.other_patient_ids] == ["CCCD", "BHYT"]
    assert record.source_ae == "CT01"


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),
        ("chrFren.dcm", "Buc^Jérôme"),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrGreek.dcm", "Διονυσιος"),
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),
        ("chrArab.dcm", "قباني^لنزار"),
    ],
)
def test_names_are_decoded_per_specific_character_set(filename: str, name: str) -> None:
    with open(os.path.join(CHARSETS, filename), "rb") as fh:
        assert parse_instance(fh.read()).record.patient_name == name


def test_latin1_name_is_decoded() -> None:
    assert parse_instance(to_bytes(latin1_instance())).record.patient_name == "Müller^Jürgen"


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda ds: to_bytes(without(ds, "StudyInstanceUID")), StoreStatus.MISSING_ATTRIBUTE),
        (lambda ds: to_bytes(without(ds, "SeriesInstanceUID")), StoreStatus.MISSING_ATTRIBUTE),
        (lambda ds: to_bytes(with_bad_uid(ds, "StudyInstanceUID", "1.2.03")), StoreStatus.INVALID_UID),
        (lambda ds: to_bytes(with_bad_uid(ds, "SeriesInstanceUID", "1..2")), StoreStatus.INVALID_UID),
        (lambda ds: to_bytes(with_bad_uid(ds, "StudyInstanceUID", "1." + "2" * 70)), StoreStatus.INVALID_UID),
        (lambda ds: to_bytes(with_bad_uid(ds, "SOPInstanceUID", "../../etc/passwd")), StoreStatus.INVALID_UID),
        (lambda ds: to_bytes(without(ds, "PixelData")), StoreStatus.MISSING_ATTRIBUTE),
        (lambda ds: truncated(ds, 0.5), StoreStatus.CANNOT_UNDERSTAND),
        (lambda ds: b"\x00" * 128 + b"DICM" + b"\xff" * 300, StoreStatus.CANNOT_UNDERSTAND),
        (lambda ds: b"not dicom at all", StoreStatus.CANNOT_UNDERSTAND),
        (lambda ds: to_bytes(with_bad_uid(ds, "SOPClassUID", "1.2.3.4.5")), StoreStatus.REFUSED_SOP_CLASS),
    ],
)
def test_defective_input_is_refused_with_its_status(make, status) -> None:
    with pytest.raises(InstanceRejected) as caught:
        parse_instance(make(ct_series(1, size=16)[0]))
    assert caught.value.status == status
    assert 0 < len(caught.value.reason) <= 64  # fits Error Comment (LO)


def test_every_truncation_point_of_an_image_is_refused() -> None:
    data = to_bytes(ct_series(1, size=16)[0])
    for cut in range(0, len(data) - 1, 3):
        with pytest.raises(InstanceRejected):
            parse_instance(data[:cut])


def test_truncation_inside_large_pixel_data_is_refused() -> None:
    """Pixel data larger than what validation reads into memory is still checked to its last byte."""
    data = to_bytes(ct_series(1, size=256)[0])  # 128 KiB of pixel data
    parse_instance(data)
    for cut in (len(data) - 1, len(data) - 2, len(data) - 4096, len(data) - 70_000, len(data) - 131_000):
        with pytest.raises(InstanceRejected, match="truncated"):
            parse_instance(data[:cut])


def test_dataset_must_agree_with_the_c_store_request() -> None:
    ds = ct_series(1, size=16)[0]
    with pytest.raises(InstanceRejected) as caught:
        parse_instance(to_bytes(ds), affected_sop_class=MRImageStorage)
    assert caught.value.status == StoreStatus.DATASET_MISMATCH
    with pytest.raises(InstanceRejected):
        parse_instance(to_bytes(ds), affected_sop_instance="1.2.3")
    parse_instance(to_bytes(ds), affected_sop_class=ds.SOPClassUID, affected_sop_instance=ds.SOPInstanceUID)


def test_rejection_reasons_carry_no_patient_data() -> None:
    ds = ct_series(1, size=16)[0]
    for data in (truncated(ds, 0.5), to_bytes(without(ds, "StudyInstanceUID"))):
        with pytest.raises(InstanceRejected) as caught:
            parse_instance(data)
        assert "Nguy" not in caught.value.reason and "MRN" not in caught.value.reason
