"""The engine on the planted-PHI corpus and on hand-made cases for each kind of action."""

from __future__ import annotations

import datetime as dt
import io
import warnings
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import BasicTextSRStorage, EnhancedCTImageStorage, generate_uid

from dicom_rules.engine import Deidentifier, Mode, Override, OverrideAction, Policy
from dicom_rules.profile import Option
from dicom_rules.pseudonyms import PseudonymKey
from gateway.ingest.encode import encode_instance
from gateway.ingest.instance import validate_instance
from tests.dicom_rules.phi_corpus import (
    B_VALUE_ELEMENT,
    PLANTED,
    SAFE_PRIVATE_CREATOR,
    SAFE_PRIVATE_GROUP,
    STUDY_DATES,
    part10_bytes,
    planted_dataset,
    surviving,
)

SECRET = b"test-secret-0123456789abcdef0123456789"
KEY = PseudonymKey(SECRET, namespace="pseudonymised")
PSEUDONYMISED_DEFAULTS = frozenset(
    {Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS}
)
TYPE1_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def deidentify(ds: Dataset, mode: Mode = Mode.ANONYMISED, options: frozenset[Option] = frozenset(), **policy) -> bytes:
    """De-identify a dataset as the gateway does and return the Part 10 bytes it would store."""
    data = part10_bytes(ds)
    received = validate_instance(data)
    Deidentifier(Policy(mode, options, **policy), KEY).apply(received)
    return encode_instance(received, data)[0]


def read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the output must read back without complaint
        return dcmread(io.BytesIO(data))


@pytest.mark.parametrize(
    "mode, options",
    [
        (Mode.ANONYMISED, frozenset()),
        (Mode.PSEUDONYMISED, PSEUDONYMISED_DEFAULTS),
        (Mode.ANONYMISED, frozenset({Option.RETAIN_SAFE_PRIVATE, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_DESCRIPTORS})),
        (Mode.ANONYMISED, frozenset({Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS})),
    ],
    ids=["basic", "pseudonymised-defaults", "safe-private-clean", "full-dates"],
)
def test_no_planted_value_survives_and_output_is_valid(mode: Mode, options: frozenset[Option]) -> None:
    for charset in ("ISO_IR 192", "ISO_IR 100"):
        out = deidentify(planted_dataset(charset=charset), mode, options)
        assert surviving(out) == []
        ds = read(out)
        for keyword in TYPE1_UIDS:
            assert str(ds[keyword].value).startswith(("2.25.", "1.2.840.10008.")), keyword
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert "SourceApplicationEntityTitle" not in ds.file_meta
        validate_instance(out)  # the gateway's own ingest checks accept it
        assert ds.pixel_array.shape == (512, 512)


def test_standard_uids_and_safe_attributes_are_kept() -> None:
    ds = read(deidentify(planted_dataset()))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.Manufacturer == "SIEMENS"
    assert ds.Modality == "CT"
    assert ds.ProcedureCodeSequence[0].CodeValue  # coded concepts stay
    assert ds.AnatomicRegionSequence[0].CodeMeaning  # unlisted sequence kept, cleaned
    assert ds.AnatomicRegionSequence[0].get("ContentCreatorName", "") == ""
    assert ds.PatientName == ds.PatientID and ds.PatientID.startswith("PGW")
    assert "OtherPatientIDsSequence" not in ds
    assert ds.PatientBirthDate == ""
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.StudyDate == ""  # Type 2 in the CT IOD: emptied, not removed


def test_method_codes_name_every_option() -> None:
    ds = read(deidentify(planted_dataset(), Mode.PSEUDONYMISED, PSEUDONYMISED_DEFAULTS))
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113105", "113107", "113108"}
    assert all(item.CodingSchemeDesignator == "DCM" for item in ds.DeidentificationMethodCodeSequence)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_dates_shift_by_one_offset_per_patient_and_keep_intervals() -> None:
    first = read(deidentify(planted_dataset(study=0), Mode.PSEUDONYMISED, PSEUDONYMISED_DEFAULTS))
    second = read(deidentify(planted_dataset(study=1), Mode.PSEUDONYMISED, PSEUDONYMISED_DEFAULTS))

    def day(value: str) -> dt.date:
        return dt.datetime.strptime(value, "%Y%m%d").date()

    original_gap = day(STUDY_DATES[1]) - day(STUDY_DATES[0])
    assert day(second.StudyDate) - day(first.StudyDate) == original_gap
    offset = (day(first.StudyDate) - day(STUDY_DATES[0])).days
    assert -365 <= offset <= -1
    assert first.PatientID == second.PatientID  # one patient, one pseudonym
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.PatientAge == planted_dataset().PatientAge  # ages stay as they were: all dates moved together

    other = planted_dataset()
    other.PatientID = "ANOTHER-PATIENT-17"
    moved = read(deidentify(other, Mode.PSEUDONYMISED, PSEUDONYMISED_DEFAULTS))
    assert (day(moved.StudyDate) - day(STUDY_DATES[0])).days != offset


def test_referenced_uids_map_like_the_instances_they_reference() -> None:
    referenced = planted_dataset(index=0)
    referring = planted_dataset(index=1)
    item = Dataset()
    item.ReferencedSOPClassUID = referenced.SOPClassUID
    item.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
    referring.ReferencedImageSequence = Sequence([item])
    keep_refs = {0x00081140: Override(OverrideAction.KEEP)}
    out_referenced = read(deidentify(referenced, overrides=keep_refs))
    out_referring = read(deidentify(referring, overrides=keep_refs))
    assert out_referring.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out_referenced.SOPInstanceUID
    assert out_referring.ReferencedImageSequence[0].ReferencedSOPClassUID == referenced.SOPClassUID
    assert out_referring.StudyInstanceUID == out_referenced.StudyInstanceUID
    assert out_referring.FrameOfReferenceUID == out_referenced.FrameOfReferenceUID


def _minimal(sop_class: str) -> Dataset:
    ds = planted_dataset()
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.ContentDate = "20240110"
    ds.DeviceSerialNumber = "SN-PLANT-9981"
    return ds


def test_compound_actions_follow_the_type_in_the_iod() -> None:
    ct = read(deidentify(_minimal("1.2.840.10008.5.1.4.1.1.2")))
    assert ct.ContentDate == ""  # Z/D, Type 2C in the General Image module: emptied
    assert "DeviceSerialNumber" not in ct  # X/Z/D, Type 3 in General Equipment: removed
    sr = read(deidentify(_minimal(BasicTextSRStorage)))
    assert sr.ContentDate == "19000101"  # Type 1 in the SR Document General module: dummy
    enhanced = read(deidentify(_minimal(EnhancedCTImageStorage)))
    assert enhanced.DeviceSerialNumber == "REMOVED"  # Type 1 in Enhanced General Equipment: dummy


def test_private_elements_go_unless_safe_and_retained() -> None:
    basic = read(deidentify(planted_dataset()))
    assert not [e for e in basic if e.tag.is_private]
    kept = read(deidentify(planted_dataset(), options=frozenset({Option.RETAIN_SAFE_PRIVATE})))
    private = {(e.tag.group, e.tag.element): e for e in kept if e.tag.is_private}
    creator = next(k for k, e in private.items() if e.value == SAFE_PRIVATE_CREATOR)
    assert (SAFE_PRIVATE_GROUP, (creator[1] << 8) | B_VALUE_ELEMENT) in private
    assert {g for g, _ in private} == {SAFE_PRIVATE_GROUP}  # the PLANT PRIVATE block and its sequence are gone


def test_overlays_and_curves_go_unless_graphics_are_cleaned() -> None:
    basic = read(deidentify(planted_dataset()))
    assert not [e for e in basic if 0x5000 <= e.tag.group <= 0x60FF]  # whole planes, not only their data
    graphics = read(deidentify(planted_dataset(), options=frozenset({Option.CLEAN_GRAPHICS})))
    assert 0x60003000 in graphics and graphics[0x60000010].value == 512


def test_overrides_keep_remove_hash_replace() -> None:
    overrides = {
        0x00081090: Override(OverrideAction.REMOVE),  # ManufacturerModelName, safe otherwise
        0x00080080: Override(OverrideAction.REPLACE, "BENH VIEN A"),  # InstitutionName
        0x0008103E: Override(OverrideAction.HASH),  # SeriesDescription
        0x00100040: Override(OverrideAction.KEEP),  # PatientSex
    }
    ds = read(deidentify(planted_dataset(), overrides=overrides))
    assert "ManufacturerModelName" not in ds
    assert ds.InstitutionName == "BENH VIEN A"
    assert ds.SeriesDescription == KEY.hashed(PLANTED["series_description"], 64)[:64]
    assert ds.PatientSex == "F"


def test_clean_descriptors_blots_identifiers_and_keeps_the_rest() -> None:
    ds = read(deidentify(planted_dataset(), options=frozenset({Option.CLEAN_DESCRIPTORS})))
    assert ds.StudyDescription == "CT head for ***"
    assert ds.SeriesDescription.startswith("Axial 5mm by ***")
    assert "PatientComments" not in ds  # narrative about the patient is removed, not cleaned


def charset_files() -> list[Path]:
    return sorted((Path(pydicom.data.__file__).parent / "charset_files").glob("chr*.dcm"))


@pytest.mark.parametrize("path", charset_files(), ids=lambda p: p.name)
def test_character_sets_stay_correct(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = dcmread(path)
    name = str(original.get("PatientName", ""))
    Deidentifier(Policy(Mode.PSEUDONYMISED, PSEUDONYMISED_DEFAULTS), KEY).apply(original)
    buffer = io.BytesIO()
    original.save_as(buffer, enforce_file_format=True)
    again = dcmread(io.BytesIO(buffer.getvalue()))
    for element in again.iterall():
        _ = element.value  # every remaining value decodes with the declared character set
    assert again.SpecificCharacterSet == original.SpecificCharacterSet
    if name:
        assert str(again.PatientName) != name
        for component in name.replace("=", "^").split("^"):
            if len(component.strip()) > 2:
                assert component.strip() not in str(again.PatientName)


def test_uids_are_keyed() -> None:
    original = generate_uid()
    same = PseudonymKey(SECRET, namespace="pseudonymised").uid(original)
    assert KEY.uid(original) == same and same.startswith("2.25.") and len(same) <= 64
    assert PseudonymKey(SECRET + b"!", namespace="pseudonymised").uid(original) != same
    assert PseudonymKey(SECRET, namespace="anonymised").uid(original) != same
