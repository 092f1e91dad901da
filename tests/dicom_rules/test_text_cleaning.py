"""Cleaning descriptors: the instance's identifying words go, accents and case notwithstanding."""

from __future__ import annotations

from dicom_rules.dates import shift_date, shift_datetime
from dicom_rules.text_cleaning import TextCleaner


def test_names_ids_and_long_numbers_are_blotted() -> None:
    cleaner = TextCleaner(["NGUYỄN^THỊ PHI", "MRN-0042", "BENH VIEN A"])
    assert cleaner.clean("CT sọ não cho nguyen thi phi") == "CT sọ não cho ***"
    assert cleaner.clean("Nguyễn Thị Phi, so sánh phim cũ") == "***, so sánh phim cũ"
    assert cleaner.clean("ref MRN-0042 tel 0905 551 234") == "ref *** tel ***"
    assert cleaner.clean("chụp ngày 12/03/2024") == "chụp ngày ***"
    assert cleaner.clean("Axial 5mm 3 phases") == "Axial 5mm 3 phases"


def test_date_shift() -> None:
    assert shift_date("20240301", -1) == "20240229"
    assert shift_date("2024-03-01", -1) is None
    assert shift_datetime("20240301101500.123+0700", -1) == "20240229101500.123+0700"
    assert shift_datetime("2024", -1) is None
