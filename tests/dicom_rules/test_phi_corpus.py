"""The planted-PHI corpus is valid DICOM and carries every planted value."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom import dcmread

from tests.dicom_rules.phi_corpus import (
    PLANTED,
    PLANTED_UIDS,
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    STUDY_DATES,
    part10_bytes,
    planted_dataset,
    surviving,
    write_corpus,
)


def test_corpus_round_trips_through_part10_files(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path, 3, rows=64, columns=48)
    read = [dcmread(path) for path in paths]
    built = planted_dataset(2, rows=64, columns=48)
    assert [ds.InstanceNumber for ds in read] == [1, 2, 3]
    assert len({ds.SOPInstanceUID for ds in read}) == 3
    assert {ds.StudyInstanceUID for ds in read} == {PLANTED_UIDS["study_instance"]}
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in read)
    assert read[2].PatientName == PLANTED["patient_name"]
    assert str(read[2].OtherPatientNames[0]) == PLANTED["patient_name_vietnamese"]
    assert np.array_equal(read[2].pixel_array, built.pixel_array)
    assert read[2].pixel_array.dtype == np.int16


def test_surviving_finds_every_planted_value_in_untouched_bytes() -> None:
    everything = sorted({*PLANTED, *PLANTED_UIDS})
    first = planted_dataset(0, rows=16, columns=16)
    later = planted_dataset(4, rows=16, columns=16, study=1)
    assert surviving(part10_bytes(first)) == everything
    assert surviving(part10_bytes(later)) == everything
    assert later.StudyDate == STUDY_DATES[1] != first.StudyDate
    assert surviving(b"DICM" + bytes(256)) == []


def test_pixel_data_has_two_bytes_per_pixel() -> None:
    ds = planted_dataset(rows=40, columns=24)
    assert len(ds.PixelData) == 40 * 24 * 2
    assert len(planted_dataset().PixelData) == 512 * 512 * 2


def test_private_and_unlisted_nested_sequences_exist() -> None:
    ds = dcmread(io.BytesIO(part10_bytes(planted_dataset(rows=8, columns=8))))
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    item = block[0x02].value[0]
    assert item.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x10].value == PLANTED["private_sequence_name"]
    region = ds.AnatomicRegionSequence[0]
    assert region.CodeMeaning == "Head"
    modifier = region.AnatomicRegionModifierSequence[0]
    assert modifier.PersonName == PLANTED["unlisted_nested_name"]
    assert modifier.ContentDescription == PLANTED["unlisted_nested_text"]
