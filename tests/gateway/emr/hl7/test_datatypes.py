"""HL7 v2 values as DICOM values: dates and times."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from gateway.emr.hl7.datatypes import date_time

HANOI = ZoneInfo("Asia/Ho_Chi_Minh")


def test_a_time_with_its_utc_offset_is_given_in_the_hospitals_zone() -> None:
    assert date_time("20240110233000+0000", "OBR^1^7", "start", HANOI) == ("20240111", "063000")
    assert date_time("202401110630+0700", "OBR^1^7", "start", HANOI) == ("20240111", "063000")
    assert date_time("20240110233000", "OBR^1^7", "start", HANOI) == ("20240110", "233000")  # no offset: as given
    assert date_time("20240110233000+0000", "OBR^1^7", "start") == ("20240110", "233000")  # no zone: as given
