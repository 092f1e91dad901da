"""Malformed, oversized and endless PDUs: each gets an A-ASSOCIATE-RJ or A-ABORT and one warning, never a
traceback, memory stays bounded, and the gateway goes on serving."""

from __future__ import annotations

import logging
import random
import struct
import threading
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateway.dimse import pdu
from gateway.dimse.negotiation import AssociationRejected, decode_request, negotiate
from gateway.dimse.pdu import PDUError
from gateway.dimse.scp import supported_contexts
from tests.gateway.dimse.raw_peer import (
    VERIFICATION,
    command,
    echo,
    echo_rq,
    fragment,
    LogWindow,
    RawPeer,
    request,
    stored_large_study,
    until,
    wait_settled,
)
from tests.gateway_process import GatewayProcess

MAX_MESSAGE = 16 << 20
NETWORK_TIMEOUT = 3.0
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    gw = GatewayProcess(
        tmp_path_factory.mktemp("hostile") / "gw",
        {
            "PACSGW_DICOM_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
            "PACSGW_DICOM_NETWORK_TIMEOUT": str(NETWORK_TIMEOUT),
            "PACSGW_DICOM_QUERY_AETS": "RAW",
            "PACSGW_DICOM_WORKLIST_AETS": "*",
        },
    )
    gw.start()
    yield gw
    gw.kill()


pytestmark = pytest.mark.usefixtures("settled")


GOOD = request([(CTImageStorage, ExplicitVRLittleEndian)], calling="RAW")
ITEMS = 74  # variable items follow the fixed fields
FIRST_CONTEXT = ITEMS + 4 + 21  # after the application context item


def _sized(data: bytes | bytearray) -> bytes:
    """``data`` with its PDU length set to what follows the header."""
    out = bytearray(data)
    struct.pack_into(">I", out, 2, len(out) - 6)
    return bytes(out)


def _title(field: slice, value: bytes) -> bytes:
    out = bytearray(GOOD)
    out[field] = value.ljust(16, b" ")
    return bytes(out)


def _patched(offset: int, value: bytes) -> bytes:
    out = bytearray(GOOD)
    out[offset : offset + len(value)] = value
    return bytes(out)


CALLED, CALLING = slice(10, 26), slice(26, 42)
RJ_CALLING, RJ_CALLED = (pdu.A_ASSOCIATE_RJ, (0x01, 0x01, 0x03)), (pdu.A_ASSOCIATE_RJ, (0x01, 0x01, 0x07))
ABORT = (pdu.A_ABORT, None)

MALFORMED = {
    "non-ASCII calling AE title": (_title(CALLING, b"CT\xe9"), RJ_CALLING),
    "non-ASCII called AE title": (_title(CALLED, b"PACS\xc4"), RJ_CALLED),
    "calling AE title of spaces": (_title(CALLING, b""), RJ_CALLING),
    "backslash in the calling AE title": (_title(CALLING, b"CT\\01"), RJ_CALLING),
    "control character in the calling AE title": (_title(CALLING, b"CT\x0701"), RJ_CALLING),
    "NUL-padded calling AE title": (_title(CALLING, b"CT01".ljust(16, b"\x00")), RJ_CALLING),
    "protocol version 2": (_patched(6, b"\x00\x02"), (pdu.A_ASSOCIATE_RJ, (0x01, 0x02, 0x02))),
    "unknown application context": (GOOD.replace(b"1.2.840.10008.3.1.1.1", b"1.2.840.10008.3.1.1.9"), (pdu.A_ASSOCIATE_RJ, (0x01, 0x01, 0x02))),
    "shorter than its fixed fields": (_sized(GOOD[:60]), ABORT),
    "empty A-ASSOCIATE-RQ": (_sized(GOOD[:6]), ABORT),
    "item longer than the PDU": (_patched(FIRST_CONTEXT + 2, b"\xff\xff"), ABORT),
    "item cut short": (_sized(GOOD[: FIRST_CONTEXT + 12]), ABORT),
    "unknown item type": (_patched(FIRST_CONTEXT, b"\x77"), ABORT),
    "item of length zero": (_patched(FIRST_CONTEXT + 2, b"\x00\x00"), ABORT),
    "non-ASCII byte in the abstract syntax": (GOOD.replace(CTImageStorage.encode(), CTImageStorage.encode()[:-1] + b"\xe9"), ABORT),
    "user information sub-item cut short": (_sized(GOOD[:-3]), ABORT),
    "a PDU length of 4 GiB": (GOOD[:2] + b"\xff\xff\xff\xff" + GOOD[6:], ABORT),
    "P-DATA-TF before any request": (struct.pack(">BxI", pdu.P_DATA_TF, 4 << 20), ABORT),
    "unknown PDU type": (b"\x09\x00\x00\x00\x00\x04abcd", ABORT),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_request_gets_a_prompt_answer_and_one_warning(gateway: GatewayProcess, case: str) -> None:
    data, (expected_type, expected_reason) = MALFORMED[case]
    log = LogWindow(gateway)
    with RawPeer(gateway.dicom_port, timeout=1.5) as peer:  # promptly: not after a timeout
        peer.send(data)
        pdu_type, body = peer.receive()
        assert peer.closed_within(1.5)
    assert pdu_type == expected_type
    if expected_reason is not None:
        assert tuple(body[1:4]) == expected_reason
    assert log.faults() == []
    assert len(log.warnings()) == 1, log.lines()
    assert echo(gateway.dicom_port) == 0


def test_an_invalid_uid_in_a_proposed_context_refuses_that_context(gateway: GatewayProcess) -> None:
    from pynetdicom.pdu import A_ASSOCIATE_AC

    data = request([(CTImageStorage, ExplicitVRLittleEndian), (VERIFICATION, ImplicitVRLittleEndian)])
    data = data.replace(CTImageStorage.encode(), b"1.2.840.10008.5.1.4.1.1.x")
    log = LogWindow(gateway)
    with RawPeer(gateway.dicom_port, timeout=2) as peer:
        peer.send(data)
        pdu_type, body = peer.receive()
    assert pdu_type == pdu.A_ASSOCIATE_AC
    ac = A_ASSOCIATE_AC()
    ac.decode(struct.pack(">BxI", pdu_type, len(body)) + body)
    results = {cx.context_id: cx.result for cx in ac.to_primitive().presentation_context_definition_results_list}
    assert results == {1: 0x03, 3: 0x00}  # abstract syntax not supported; the other one accepted
    assert log.faults() == [] and not [line for line in log.lines() if "Warning" in line]


def test_mangled_association_requests_decode_to_a_refusal_or_an_abort(caplog: pytest.LogCaptureFixture) -> None:
    """In process, many more requests than over sockets: the codecs raise only our two refusals, and say nothing."""
    caplog.set_level(logging.DEBUG)
    seed = request([(CTImageStorage, ExplicitVRLittleEndian), (VERIFICATION, ImplicitVRLittleEndian),
                    (STUDY_ROOT_GET, ImplicitVRLittleEndian)], calling="CT01", scp_roles=(CTImageStorage,))  # fmt: skip
    supported, rng = supported_contexts(worklist=True), random.Random(8)
    outcomes: set[str] = set()
    for _ in range(1500):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(6, len(data))] = rng.randrange(256)
        if rng.random() < 0.25:
            data = bytearray(_sized(data[: rng.randrange(6, len(data))]))
        try:
            negotiate(decode_request(bytes(data)), supported, max_pdu=16384)
            outcomes.add("accepted")
        except (PDUError, AssociationRejected) as refused:
            outcomes.add(type(refused).__name__)
    assert outcomes == {"accepted", "PDUError", "AssociationRejected"}
    assert [record.getMessage() for record in caplog.records] == []


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_dataset_without_a_last_fragment_is_cut_off_at_the_message_limit(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    pid = gateway.proc.pid
    log = LogWindow(gateway)
    baseline, peak = _vm_rss(pid), [0]
    streaming = threading.Event()

    def watch() -> None:
        while streaming.is_set():
            peak[0] = max(peak[0], _vm_rss(pid))
            time.sleep(0.005)

    chunk = fragment(1, bytes(1 << 20), command=False, last=False)
    sent, total = 0, 10 * MAX_MESSAGE
    watcher = threading.Thread(target=watch)
    with RawPeer(gateway.dicom_port) as peer:
        peer.associate()
        peer.send(
            fragment(
                1, command(0x0001, 1, with_dataset=True, AffectedSOPClassUID=CTImageStorage,
                           AffectedSOPInstanceUID="1.2.826.0.1.3680043.10.1337.99", Priority=0),
                command=True, last=True,
            )
        )  # fmt: skip
        streaming.set()
        watcher.start()
        try:
            while sent < total:
                peer.send(chunk)
                sent += 1 << 20
        except OSError:
            pass  # the gateway aborted and closed while we were sending
        finally:
            streaming.clear()
            watcher.join()
        assert sent < 3 * MAX_MESSAGE  # cut off near the limit, not after the whole stream
        assert peer.closed_within(NETWORK_TIMEOUT)
    assert peak[0] - baseline < 2 * MAX_MESSAGE, f"RSS grew by {(peak[0] - baseline) >> 20} MiB"
    assert any("dicom.max_message_bytes" in line for line in log.warnings())
    assert log.faults() == []
    assert echo(gateway.dicom_port) == 0


def test_a_command_set_that_never_ends_is_aborted(gateway: GatewayProcess) -> None:
    with RawPeer(gateway.dicom_port, timeout=3) as peer:
        peer.associate()
        try:
            for _ in range(64):  # 256 KiB of command fragments, none the last
                peer.send(fragment(1, bytes(4096), command=True, last=False))
        except OSError:
            pass
        pdu_type, _ = peer.receive()
        assert pdu_type == pdu.A_ABORT


def test_a_pdu_longer_than_offered_is_aborted_unread(gateway: GatewayProcess) -> None:
    with RawPeer(gateway.dicom_port, timeout=1.5) as peer:
        peer.associate()
        peer.send(struct.pack(">BxI", pdu.P_DATA_TF, 0xFFFFFFF0))  # and no body
        pdu_type, body = peer.receive()
        assert pdu_type == pdu.A_ABORT


def _established(local_port: int, remote_port: int) -> bool:
    """Whether the kernel holds an open TCP connection from ``local_port`` to ``remote_port`` on 127.0.0.1."""
    wanted = f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == wanted:
            return fields[3] == "01"  # TCP_ESTABLISHED
    return False


def test_a_peer_that_never_reads_is_let_go(gateway: GatewayProcess) -> None:
    """A C-GET requester that never reads the instance it asked for: the gateway closes its end after the timeout."""
    identifier = stored_large_study(gateway)  # 8 MiB: far more than the sockets between us hold
    log = LogWindow(gateway)
    with RawPeer(gateway.dicom_port, receive_buffer=4096) as peer:
        contexts = [(STUDY_ROOT_GET, ImplicitVRLittleEndian), (CTImageStorage, ExplicitVRLittleEndian)]
        peer.send(request(contexts, scp_roles=(CTImageStorage,)))
        assert peer.receive()[0] == pdu.A_ASSOCIATE_AC
        rq = command(0x0010, 1, with_dataset=True, AffectedSOPClassUID=STUDY_ROOT_GET, Priority=0)
        peer.send(fragment(1, rq, command=True, last=True) + fragment(1, _implicit(identifier), command=False, last=True))
        client_port = peer.sock.getsockname()[1]
        assert _established(gateway.dicom_port, client_port)
        # The peer never reads a byte; the gateway's end does not wait for it forever.
        assert until(lambda: not _established(gateway.dicom_port, client_port), timeout=2 * NETWORK_TIMEOUT + 10)
    assert any("aborted" in line for line in log.warnings())
    assert log.faults() == []


def _implicit(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return fp.getvalue()


def _fuzz_seeds() -> list[bytes]:
    identifier = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY \x10\x00\x20\x00\x02\x00\x00\x00*\x00"
    store = command(0x0001, 2, with_dataset=True, AffectedSOPClassUID=CTImageStorage,
                    AffectedSOPInstanceUID="1.2.826.0.1.3680043.10.1337.98", Priority=0)  # fmt: skip
    seeds = [echo_rq(), fragment(3, store, command=True, last=True) + fragment(3, b"\x08\x00\x16\x00\x02\x00\x00\x00ab", command=False, last=True)]
    for context_id, field, sop_class in ((5, 0x0020, STUDY_ROOT_FIND), (7, 0x0021, STUDY_ROOT_MOVE), (5, 0x0021, STUDY_ROOT_FIND),
                                         (9, 0x0020, WORKLIST_FIND), (11, 0x0140, MPPS), (11, 0x0120, MPPS)):  # fmt: skip
        rq = command(field, 3, with_dataset=True, AffectedSOPClassUID=sop_class, MoveDestination="NOWHERE", Priority=0)
        seeds.append(fragment(context_id, rq, command=True, last=True) + fragment(context_id, identifier, command=False, last=True))
    return seeds


def test_mangled_dimse_messages_never_cause_a_traceback(gateway: GatewayProcess) -> None:
    contexts = [(VERIFICATION, ImplicitVRLittleEndian), (CTImageStorage, ExplicitVRLittleEndian),
                (STUDY_ROOT_FIND, ImplicitVRLittleEndian), (STUDY_ROOT_MOVE, ImplicitVRLittleEndian),
                (WORKLIST_FIND, ImplicitVRLittleEndian), (MPPS, ImplicitVRLittleEndian)]  # fmt: skip
    seeds, rng = _fuzz_seeds(), random.Random(20261202)
    log = LogWindow(gateway)
    for _ in range(60):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(1, len(data))]
        with RawPeer(gateway.dicom_port, timeout=2) as peer:
            peer.associate(contexts)
            try:
                peer.send(bytes(data) + echo_rq(99))
            except OSError:
                continue
            peer.closed_within(0.1)
    wait_settled(gateway, timeout=NETWORK_TIMEOUT + 5)
    assert log.faults() == [], "\n".join(log.lines()[-40:])
    assert echo(gateway.dicom_port) == 0


def _explicit_query() -> bytes:
    """A valid Study Root identifier in Explicit VR Little Endian (every VR of it with a 2-byte length)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "DOE^J*"
    ds.StudyDate = "20200101-"
    ds.StudyInstanceUID = "1.2.3"
    ds.NumberOfStudyRelatedInstances = None
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _vr_offsets() -> list[int]:
    data, offsets, offset = _explicit_query(), [], 0
    while offset < len(data):
        offsets.append(offset + 4)
        offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    return offsets


def _flipped(offset: int, value: int) -> bytes:
    out = bytearray(_explicit_query())
    out[offset] = value
    return bytes(out)


# (0010,0020) Patient ID with a VR no standard has: it reads, and fails only once its value is converted.
UNKNOWN_VR = _explicit_query() + b"\x10\x00\x20\x00QQ\x04\x00ABCD"
IDENTIFIER_CONTEXTS = [(STUDY_ROOT_FIND, ExplicitVRLittleEndian), (WORKLIST_FIND, ExplicitVRLittleEndian),
                       (STUDY_ROOT_MOVE, ExplicitVRLittleEndian), (STUDY_ROOT_GET, ExplicitVRLittleEndian),
                       (MPPS, ExplicitVRLittleEndian), (VERIFICATION, ImplicitVRLittleEndian)]  # fmt: skip
# operation -> (context ID, command field, status of the final response)
OPERATIONS = {"C-FIND": (1, 0x0020, 0xC000), "MWL C-FIND": (3, 0x0020, 0xC000), "C-MOVE": (5, 0x0021, 0xC000),
              "C-GET": (7, 0x0010, 0xC000), "MPPS N-CREATE": (9, 0x0140, None)}  # fmt: skip
BAD_IDENTIFIERS = {
    # No VR starts or ends with Z, nor has a byte 00 or FF.
    **{f"C-FIND, VR byte {offset} set to {value:#04x}": ("C-FIND", _flipped(offset, value))
       for n, vr in enumerate(_vr_offsets()) for offset, value in ((vr, 0x5A), (vr + 1, (0x5A, 0x00, 0xFF)[n % 3]))},
    **{f"{operation}, an element of unknown VR": (operation, UNKNOWN_VR) for operation in OPERATIONS},
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_IDENTIFIERS, ids=list(BAD_IDENTIFIERS))
def test_an_undecodable_identifier_gets_a_final_response(gateway: GatewayProcess, case: str) -> None:
    operation, identifier = BAD_IDENTIFIERS[case]
    context_id, field, expected = OPERATIONS[operation]
    attributes = {"AffectedSOPClassUID": IDENTIFIER_CONTEXTS[context_id // 2][0], "Priority": 0}
    if operation == "C-MOVE":
        attributes["MoveDestination"] = "NOWHERE"
    if operation == "MPPS N-CREATE":
        attributes = {"AffectedSOPClassUID": MPPS, "AffectedSOPInstanceUID": "1.2.826.0.1.3680043.10.1337.97"}
    log = LogWindow(gateway)
    with RawPeer(gateway.dicom_port, timeout=3) as peer:  # promptly: not after a timeout
        peer.associate(IDENTIFIER_CONTEXTS)
        rq = command(field, 7, with_dataset=True, **attributes)
        peer.send(fragment(context_id, rq, command=True, last=True) + fragment(context_id, identifier, command=False, last=True))
        final = peer.final_response()
        assert int(final.MessageIDBeingRespondedTo) == 7
        if expected is None:
            assert int(final.Status) != 0x0000
        else:
            assert int(final.Status) == expected and final.ErrorComment == "identifier cannot be decoded"
        # The association goes on serving.
        peer.send(pdu.p_data(11, command(0x0030, 8, AffectedSOPClassUID=VERIFICATION), command=True, max_pdu=0))
        echoed, _ = peer.message()
        assert (int(echoed.MessageIDBeingRespondedTo), int(echoed.Status)) == (8, 0x0000)
    assert log.faults() == [], "\n".join(log.lines())
