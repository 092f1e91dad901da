"""Command sets are encoded by hand for speed: byte for byte what pydicom writes, whatever the command."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from gateway.dimse.commands import (
    CommandField,
    _encode,
    _pydicom_encode,
    _value_bytes,
    decode_command,
    encode_command,
    n_response,
    response,
    store_request,
)


def _request(**values: object) -> Dataset:
    rq = Dataset()
    rq.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rq.CommandField = CommandField.C_STORE_RQ
    rq.MessageID = 7
    rq.Priority = 0
    rq.CommandDataSetType = 0
    rq.AffectedSOPInstanceUID = "1.2.3.4.5"  # odd length: padded with a NUL
    for keyword, value in values.items():
        setattr(rq, keyword, value)
    return rq


CASES = {
    "success": lambda: response(_request(), 0x0000),
    "even uid": lambda: response(_request(AffectedSOPInstanceUID="1.2.3.45"), 0x0000),
    "failure with comment": lambda: response(_request(), 0xA700, error_comment="gateway spool full: x"),
    "odd comment": lambda: response(_request(), 0xC000, error_comment="abc"),
    "offending element": lambda: response(_request(), 0xA900, offending_element=0x00080018, error_comment="mismatch"),
    "with dataset": lambda: response(_request(), 0xFF00, with_dataset=True),
    "suboperations": lambda: response(
        _request(), 0xFF00, extra={"NumberOfRemainingSuboperations": 3, "NumberOfCompletedSuboperations": 65535,
                                   "NumberOfFailedSuboperations": 0, "NumberOfWarningSuboperations": 1}),
    "no sop instance": lambda: response(_without_instance(), 0x0000),
    "n-set": lambda: n_response(_request(CommandField=0x0120), 0x0000, sop_class="1.2.840.10008.3.1.2.3.3",
                                sop_instance="1.2.3"),
    "store request": lambda: store_request(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", move_originator="MOVER"),
    "odd ae": lambda: store_request(9, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", move_originator="ODD"),
}


def _without_instance() -> Dataset:
    rq = _request()
    del rq.AffectedSOPInstanceUID
    return rq


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_encoding_is_what_pydicom_writes(name: str) -> None:
    encoded = CASES[name]()
    command = decode_command(encoded)
    body = _pydicom_encode(command)[12:]  # without its group length element
    group = Dataset()
    group.CommandGroupLength = len(body)
    assert encoded == _pydicom_encode(group) + body
    assert _encode(command) == _pydicom_encode(command)
    assert all(_value_bytes(e.VR, e.value) is not None for e in command)  # by hand, not by the fallback


def test_values_it_does_not_encode_go_through_pydicom() -> None:
    rsp = Dataset()
    rsp.AffectedSOPClassUID = "1.2.3"
    rsp.ErrorComment = "caf\u00e9"  # not ASCII
    rsp.Status = 0xC000
    assert encode_command(rsp)[12:] == _pydicom_encode(rsp)
