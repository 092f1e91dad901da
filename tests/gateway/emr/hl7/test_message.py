"""Reading received HL7 v2 messages: positions as HL7 numbers them, delimiters from MSH-2, escapes, refusals."""

from __future__ import annotations

import pytest

from gateway.emr.hl7.errors import Hl7Error
from gateway.emr.hl7.message import Hl7Message

ADT = (
    "MSH|^~\\&|EMR|BV-CHORAY|PACSGW|RADIOLOGY|20261129080000||ADT^A08^ADT_A01|CTL1|P|2.5\r"
    "EVN|A08|20261129080000\r"
    "PID|1||MRN-1^^^BV-CHORAY^MR~079203001234^^^CCCD^NI||Nguyễn^Văn An\\T\\Bình||19800101|M\r"
    "NTE|1||Ghi chú: dòng 1\\.br\\dòng 2 \\F\\ \\S\\ \\E\\\r"
    "NTE|2||thứ hai\r"
)


def test_fields_are_numbered_as_hl7_numbers_them() -> None:
    msg = Hl7Message.parse(ADT)
    header = msg.header()
    assert (header.message_type, header.trigger, header.control_id, header.version) == ("ADT", "A08", "CTL1", "2.5")
    assert msg.value("MSH", 1) == "|" and msg.value("MSH", 2) == "^~\\&" and msg.value("MSH", 3) == "EMR"
    assert msg.field("PID", 3) == [[["MRN-1"], [""], [""], ["BV-CHORAY"], ["MR"]], [["079203001234"], [""], [""], ["CCCD"], ["NI"]]]
    assert msg.value("PID", 3, 1, repetition=2) == "079203001234"
    assert msg.value("PID", 5, 2) == "Văn An&Bình"  # \T\ is a subcomponent separator in the text, not one in the message
    assert msg.field("PID", 4) == [] and msg.field("PID", 40) == [] and msg.field("OBR", 1) == []
    assert msg.count("NTE") == 2 and msg.value("NTE", 3, occurrence=2) == "thứ hai"


def test_escape_sequences_are_decoded() -> None:
    assert Hl7Message.parse(ADT).value("NTE", 3) == "Ghi chú: dòng 1\rdòng 2 | ^ \\"


def test_delimiters_come_from_msh_2() -> None:
    text = "MSH*!@#$*EMR*H*PACSGW*R*20261129**ADT!A01*CTL2*P*2.5\rPID*1**A!!!I!MR@B!!!C!NI**Trần!Thị$Mai\r"
    msg = Hl7Message.parse(text)
    assert msg.header().kind == "ADT^A01"
    assert msg.value("PID", 3, 1, repetition=2) == "B" and msg.value("PID", 3, 4) == "I"
    assert msg.field("PID", 5) == [[["Trần"], ["Thị", "Mai"]]]


def test_without_a_subcomponent_separator_an_ampersand_is_text() -> None:
    msg = Hl7Message.parse("MSH|^~\\|EMR|H|||||ADT^A01|CTL3|P|2.3\rPID|1||M1||Smith & Sons^Lan\r")
    assert msg.field("PID", 5) == [[["Smith & Sons"], ["Lan"]]]


def test_line_feeds_and_blank_lines_between_segments_are_accepted() -> None:
    msg = Hl7Message.parse(ADT.replace("\r", "\r\n") + "\n\n")
    assert msg.count("PID") == 1 and msg.value("PID", 5, 1) == "Nguyễn"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("PID|1||MRN-1\r", "does not begin with an MSH segment"),
        ("MSH|^^\\&|EMR|H|||||ADT^A01|1|P|2.5\r", "encoding characters"),  # a delimiter used twice
        ("MSH|^a\\&|EMR|H|||||ADT^A01|1|P|2.5\r", "encoding characters"),  # a letter as a delimiter
        ("MSH|^~\\&|EMR|H|||||ADT^A01|1|P|2.5\rhello world\r", "line 2 is not an HL7 segment"),
    ],
)
def test_text_that_is_not_hl7_is_refused(text: str, why: str) -> None:
    with pytest.raises(Hl7Error) as refused:
        Hl7Message.parse(text)
    assert refused.value.reject and why in refused.value.text
