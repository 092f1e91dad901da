"""PID as the index's patient: the identifier mapping, names, dates and sex, and the errors naming the field."""

from __future__ import annotations

import pytest

from gateway.emr.hl7.datatypes import date_time
from gateway.emr.hl7.errors import Hl7Error
from gateway.emr.hl7.escaping import escape
from gateway.emr.hl7.message import Hl7Message
from gateway.emr.hl7.patient import demographics
from storage.index.records import OtherPatientID
from tests.gateway.emr.hl7.messages import message, msh, segment


def parse_pid(**fields: str) -> Hl7Message:
    numbered = {int(k[1:]): v for k, v in fields.items()}
    return Hl7Message.parse(message(msh("ADT^A08^ADT_A01", "C1"), segment("PID", {1: "1", **numbered})))


def test_identifier_mapping() -> None:
    pid3 = "~".join([
        "001190000002^^^^NI",  # citizen ID by its type code
        "MRN-7^^^BV-CHORAY&1.2.840.1&ISO^MR",  # the MRN, wherever it repeats
        "HN4010000000002^^^BHYT",  # insurance number by its authority
        "MRN-OLD^^^&2.16.840.1&ISO^MR",  # a second MRN: another ID, the universal ID as issuer
        "123456^^^^PI",
    ])  # fmt: skip
    patient = demographics(parse_pid(f3=pid3, f5="Nguyễn^Văn^An^^BS.", f7="198001021230", f8="F"))
    assert (patient.patient_id, patient.issuer, patient.name) == ("MRN-7", "BV-CHORAY", "Nguyễn^Văn^An^BS.")
    assert (patient.birth_date, patient.sex, patient.citizen_id) == ("19800102", "F", "001190000002")
    assert patient.other_ids == (
        OtherPatientID("001190000002", "CCCD", "TEXT"),
        OtherPatientID("HN4010000000002", "BHYT", "TEXT"),
        OtherPatientID("MRN-OLD", "2.16.840.1", "TEXT"),
        OtherPatientID("123456", "PI", "TEXT"),
    )


def test_empty_fields_keep_explicit_nulls_clear_and_legal_names_win() -> None:
    patient = demographics(parse_pid(f3="M1^^^^MR", f5='Tên^Gọi^^^^^N~Trần^Thị Bình^^^^^L', f7='""'))
    assert (patient.name, patient.birth_date, patient.sex) == ("Trần^Thị Bình", "", None)


@pytest.mark.parametrize(
    "fields, where, code",
    [
        ({"f3": "M1^^^^MR~07920300^^^CCCD^NI"}, "PID^1^3^2", 102),  # citizen ID not 12 digits
        ({"f3": "07920300123^^^^NI"}, "PID^1^3", 101),  # no MRN at all
        ({"f3": "M1^^^^MR", "f7": "19801302"}, "PID^1^7", 102),
        ({"f3": "M1^^^^MR", "f8": "X"}, "PID^1^8", 103),
        ({"f3": "M" * 65 + "^^^^MR"}, "PID^1^3^1", 102),
        ({"f3": "M1^^^^MR", "f5": "N" * 70}, "PID^1^5", 102),
    ],
)
def test_bad_fields_are_named(fields: dict[str, str], where: str, code: int) -> None:
    with pytest.raises(Hl7Error) as error:
        demographics(parse_pid(**fields))
    assert (error.value.where, int(error.value.code), error.value.ack_code) == (where, code, "AE")


def test_dates_escapes_and_unparsable_text() -> None:
    assert date_time("20261201103015.123+0700", "X", "x") == ("20261201", "103015")
    assert date_time("1980", "X", "x") == ("", "")  # only the year: DICOM has no partial date
    assert escape("a|b^c&d~e\\f\r\ng", line_breaks=True) == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g"
    assert escape("Nguyễn") == "Nguyễn"  # UTF-8 text stays as it is
    with pytest.raises(Hl7Error) as error:
        Hl7Message.parse("PID|1||X")
    assert error.value.ack_code == "AR"
