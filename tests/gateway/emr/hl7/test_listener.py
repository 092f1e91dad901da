"""The MLLP listener of a real gateway process, fed by python-hl7's MLLP client: ADT in, ACKs out, the index as the EMR says."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.index.schema import worklist_items
from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files
from tests.gateway.dimse.test_find import findscu
from tests.gateway.emr.hl7.client import ack_code, err, send, send_without_waiting
from tests.gateway.emr.hl7.messages import Order, Person, a40, adt, control_id, message, msh, orm, pid

SECRET = "a test secret of at least thirty-two characters"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(
        tmp_path_factory.mktemp("hl7") / "gw", {"PACSGW_DICOM_QUERY_AETS": "FINDSCU", "PACSGW_DEID_SECRET": SECRET}
    )
    gw.start()
    yield gw
    gw.kill()


def ingest(gateway, tmp_path: Path, patient: Patient, accession: str, count: int = 1) -> str:
    series = ct_series(count, patient=patient, accession=accession, size=16)
    result = storescu(gateway.dicom_port, write_files(series, tmp_path / accession))
    assert result.returncode == 0, result.stderr
    gateway.wait_idle()
    return str(series[0].StudyInstanceUID)


def qido(gateway, query: str) -> list[dict]:
    status, body = gateway.get(f"/dicom-web/studies?{query}&includefield=PatientBirthDate")
    assert status == 200, body
    return body


def name(record: dict) -> str:
    return record["00100010"]["Value"][0]["Alphabetic"]


def test_a01_gives_the_emr_spelling_to_cfind_qido_and_wado(gateway, tmp_path: Path) -> None:
    modality = Patient(patient_id="MRN-A01", name="NGUYEN^VAN AN", citizen_id="079203000101", insurance_number="")
    study = ingest(gateway, tmp_path, modality, "ACC-A01")
    person = Person(mrn="MRN-A01", family="Nguyễn", given="Văn An", birth="19800102", citizen="079203000101")
    [ack] = send(gateway.hl7_port, adt("A01", person))
    assert ack_code(ack) == "AA"
    [record] = qido(gateway, "PatientID=MRN-A01")
    assert name(record) == "Nguyễn^Văn An" and record["00100030"]["Value"] == ["19800102"]
    [record] = qido(gateway, "PatientName=nguyen%20van%20an&PatientID=079203000101")  # accent-insensitive, by citizen ID
    assert record["0020000D"]["Value"] == [study]
    found = findscu(gateway.dicom_port, tmp_path / "find", "QueryRetrieveLevel=PATIENT", "PatientID=MRN-A01", "PatientName", model="-P")
    assert [str(ds.PatientName) for ds in found] == ["Nguyễn^Văn An"]
    status, metadata = gateway.get(f"/dicom-web/studies/{study}/metadata")
    assert status == 200 and name(metadata[0]) == "Nguyễn^Văn An"
    # A modality sending the patient again with its own spelling does not undo the EMR's.
    ingest(gateway, tmp_path, modality, "ACC-A01B")
    assert {name(r) for r in qido(gateway, "PatientID=MRN-A01")} == {"Nguyễn^Văn An"}


def test_a08_creates_then_updates(gateway, tmp_path: Path) -> None:
    person = Person(mrn="MRN-A08", family="Lê", given="Thị Hoa", birth="19900505", sex="F", citizen="001190000808")
    assert ack_code(send(gateway.hl7_port, adt("A08", person))[0]) == "AA"  # unknown: created

    def patient() -> tuple[str, str, str]:
        [ds] = findscu(
            gateway.dicom_port, tmp_path / control_id(), "QueryRetrieveLevel=PATIENT", "PatientID=MRN-A08", "PatientName",
            "PatientBirthDate", "PatientSex", model="-P",
        )  # fmt: skip
        return str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex

    assert patient() == ("Lê^Thị Hoa", "19900505", "F")
    renamed = Person(mrn="MRN-A08", family="Lê", given="Thị Hòa", birth="", sex="F", citizen="001190000808")
    assert ack_code(send(gateway.hl7_port, adt("A08", renamed))[0]) == "AA"
    assert patient() == ("Lê^Thị Hòa", "19900505", "F")  # an empty PID-7 leaves the birth date as it was
    # Found by its citizen ID under another MRN: the same patient, never a duplicate.
    other_mrn = Person(mrn="MRN-A08-OLD", issuer="BV-KHAC", family="Lê", given="Thị Hòa", sex="F", citizen="001190000808")
    assert ack_code(send(gateway.hl7_port, adt("A08", other_mrn))[0]) == "AA"
    found = findscu(gateway.dicom_port, tmp_path / "p", "QueryRetrieveLevel=PATIENT", "PatientID=MRN-A08*", model="-P")
    assert [ds.PatientID for ds in found] == ["MRN-A08"]


def test_a_bad_citizen_id_is_refused_and_changes_nothing(gateway, tmp_path: Path) -> None:
    person = Person(mrn="MRN-BAD", family="Phạm", given="Minh", citizen="079203000999")
    assert ack_code(send(gateway.hl7_port, adt("A01", person))[0]) == "AA"
    bad = Person(mrn="MRN-BAD", family="Phạm", given="Minh Đức", citizen="07920300")
    [ack] = send(gateway.hl7_port, adt("A08", bad))
    assert ack_code(ack) == "AE"
    where, code = err(ack)
    assert where.startswith("PID^1^3") and code == "102"
    assert "12 digits" in str(ack.segment("MSA")(3))
    [ds] = findscu(gateway.dicom_port, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=MRN-BAD", "PatientName", model="-P")
    assert str(ds.PatientName) == "Phạm^Minh"


@pytest.mark.parametrize(
    "text, code",
    [
        ("this is not HL7", "100"),
        (message(msh("SIU^S12^SIU_S12", "C-SIU"), "SCH|1"), "200"),
        (message(msh("ADT^A03^ADT_A03", "C-A03"), pid(Person())), "201"),
        (message(msh("ADT^A01^ADT_A01", "C-V21", version="2.1"), pid(Person())), "203"),
        (message("MSH|^~\\&|EMR|BV|PACSGW|RAD|20261129||ADT^A01|"), "101"),
    ],
)
def test_unparsable_or_unsupported_messages_are_rejected(gateway, text: str, code: str) -> None:
    [ack, after] = send(gateway.hl7_port, text, adt("A04", Person(mrn="MRN-AFTER")))
    assert ack_code(ack) == "AR" and err(ack)[1] == code
    assert ack_code(after) == "AA"  # the connection goes on


def test_bytes_outside_mllp_framing_or_encoding_are_rejected(gateway) -> None:
    latin1 = adt("A01", Person(mrn="MRN-LATIN", family="Müller", given="Jürgen")).encode("latin-1")
    acks = send(gateway.hl7_port, b"junk\x1c\r", raw=True) + send(gateway.hl7_port, latin1)
    assert [ack_code(a) for a in acks] == ["AR", "AR"]


def test_messages_of_one_connection_apply_in_order(gateway, tmp_path: Path) -> None:
    versions = [Person(mrn="MRN-ORDER", family="Võ", given=f"Lần {i}") for i in range(20)]
    acks = send(gateway.hl7_port, *(adt("A08", p) for p in versions))
    assert {ack_code(a) for a in acks} == {"AA"}
    [ds] = findscu(gateway.dicom_port, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=MRN-ORDER", "PatientName", model="-P")
    assert str(ds.PatientName) == "Võ^Lần 19"
    status, metrics = gateway.get("/metrics")
    assert status == 200 and 'pacsgw_hl7_messages_total{ack="AA",type="ADT^A08"}' in metrics


def test_a_sender_that_runs_ahead_gets_every_ack_in_order(gateway, tmp_path: Path) -> None:
    person = Person(mrn="MRN-AHEAD", family="Lý", given="Thị Lan", citizen="079203009901", insurance="")
    renamed = [Person(**{**person.__dict__, "given": f"Thị Lan {i}"}) for i in range(30)]
    messages = [
        adt("A01", person, cid="AHEAD-1"),
        orm("NW", person, Order("PL-AHEAD", "ACC-AHEAD"), cid="AHEAD-2"),  # needs the A01 before it applied
        message(msh("ADT^A01^ADT_A01", "AHEAD-3"), "EVN|A01", "PID|1||^^^BV-CHORAY^MR"),  # no MRN: AE
        "not HL7 at all",  # AR
        orm("CA", None, Order("PL-NOSUCH", "ACC-NOSUCH"), cid="AHEAD-5"),  # unknown order: AE
        *(adt("A08", p, cid=f"AHEAD-{6 + i}") for i, p in enumerate(renamed)),
    ]
    acks = send_without_waiting(gateway.hl7_port, *messages)
    assert [ack_code(a) for a in acks] == ["AA", "AA", "AE", "AR", "AE"] + ["AA"] * len(renamed)
    answered = [str(a.segment("MSA")(2)) for a in acks]
    assert answered == ["AHEAD-1", "AHEAD-2", "AHEAD-3", "", "AHEAD-5"] + [f"AHEAD-{6 + i}" for i in range(len(renamed))]
    [ds] = findscu(gateway.dicom_port, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=MRN-AHEAD", "PatientName", model="-P")
    assert str(ds.PatientName) == "Lý^Thị Lan 29"  # applied in the order sent
    index = gateway.open_index()
    try:
        with index.engine.connect() as conn:
            orders = conn.execute(select(worklist_items.c.accession_number).where(worklist_items.c.placer_order_number.in_(["PL-AHEAD", "PL-NOSUCH"]))).all()
    finally:
        index.close()
    assert [row.accession_number for row in orders] == ["ACC-AHEAD"]
    # Each applied ADT and order is in the audit trail (the refused ones are not), patient IDs as keyed digests.
    def by_control_id(events: list[dict]) -> dict[str, dict]:
        return {e["target"].split()[1]: e for e in events if e["target"].split()[1:2] and e["target"].split()[1].startswith("AHEAD-")}

    ours = by_control_id(gateway.audit_events(lambda events: len(by_control_id(events)) >= 32, "user=hl7&limit=10000"))
    assert sorted(ours) == sorted(["AHEAD-1", "AHEAD-2"] + [f"AHEAD-{6 + i}" for i in range(len(renamed))])
    assert ours["AHEAD-1"]["action"] == "patient-record" and ours["AHEAD-2"]["action"] == "order-record"
    assert all("MRN-AHEAD" not in e["target"] and "hmac:" in e["target"] for e in ours.values())


def test_a40_moves_the_merged_patients_studies_to_the_survivor(gateway, tmp_path: Path) -> None:
    merged = Patient(patient_id="MRN-DUP", name="Hoàng^Văn Nam", citizen_id="079203004040", insurance_number="")
    study = ingest(gateway, tmp_path, merged, "ACC-A40", count=2)
    survivor = Person(mrn="MRN-KEEP", family="Hoàng", given="Văn Nam", citizen="079203004040")
    assert ack_code(send(gateway.hl7_port, adt("A01", Person(mrn="MRN-KEEP", family="Hoàng", given="Văn Nam", citizen="")))[0]) == "AA"
    [ack] = send(gateway.hl7_port, a40(survivor, "MRN-DUP"))
    assert ack_code(ack) == "AA"
    for query in ("PatientID=MRN-KEEP", "PatientID=MRN-DUP", "PatientID=079203004040"):
        [record] = qido(gateway, query)
        assert record["0020000D"]["Value"] == [study] and record["00100020"]["Value"] == ["MRN-KEEP"], query
    status, metadata = gateway.get(f"/dicom-web/studies/{study}/metadata")
    assert status == 200 and len(metadata) == 2
    assert {m["00100020"]["Value"][0] for m in metadata} == {"MRN-KEEP"} and name(metadata[0]) == "Hoàng^Văn Nam"
    patients = findscu(gateway.dicom_port, tmp_path / "p", "QueryRetrieveLevel=PATIENT", "PatientID=MRN-DUP", model="-P")
    assert [ds.PatientID for ds in patients] == ["MRN-KEEP"]  # the merged row is gone, its MRN leads to the survivor
    assert ack_code(send(gateway.hl7_port, a40(survivor, "MRN-DUP"))[0]) == "AA"  # sent again: nothing left to do
    events = gateway.audit_events(lambda events: any(e["action"] == "patient-merge" for e in events), "user=hl7")
    merges = [e for e in events if e["action"] == "patient-merge"]
    assert len(merges) == 1 and merges[0]["role"] == "hl7"
    assert "MRN-KEEP" not in merges[0]["target"] and "MRN-DUP" not in merges[0]["target"] and "hmac:" in merges[0]["target"]


def test_a40_for_an_unknown_merged_patient_is_refused(gateway) -> None:
    [ack] = send(gateway.hl7_port, a40(Person(mrn="MRN-NOBODY-1"), "MRN-NOBODY-2"))
    assert ack_code(ack) == "AE" and err(ack) == ("MRG^1^1", "204")


def test_senders_outside_the_allowed_networks_are_not_heard(tmp_path: Path) -> None:
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path / "gw", {"PACSGW_HL7_ALLOWED_PEERS": "10.0.0.0/8"})
    gw.start()
    try:
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            send(gw.hl7_port, adt("A01", Person(mrn="MRN-OUTSIDE")))
        assert "HL7 connection from 127.0.0.1 refused" in gw.log_tail()
    finally:
        gw.kill()


def _non_loopback_address() -> str | None:
    """An address of this host that is not loopback (the source an EMR on another host would have), if any."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # nothing is sent: this only picks the address routing would use
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    return next((a for a in candidates if not a.startswith("127.") and a != "0.0.0.0"), None)


def _mllp_from(source: str, port: int, text: str) -> bytes:
    """Send one MLLP block from ``source`` as a bare socket; what comes back before the ACK ends or the peer closes."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        try:
            sock.sendall(b"\x0b" + text.encode("utf-8") + b"\x1c\r")
            while b"\x1c\r" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionError:
            pass
    return received


def _refused_count(gateway) -> float:
    _, text = gateway.get("/metrics")
    match = re.search(r"^pacsgw_hl7_connections_refused_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_without_allowed_peers_only_this_host_is_heard(gateway, tmp_path: Path) -> None:
    """The default: a peer on another host may not rewrite a patient's record; loopback (all of 127/8) may."""
    source = _non_loopback_address()
    if source is None:
        pytest.skip("this host has no address but loopback to send from")
    person = Person(mrn="MRN-PEERS", family="Trần", given="Văn Bình", citizen="001190000909")
    assert ack_code(send(gateway.hl7_port, adt("A08", person))[0]) == "AA"
    refused_before = _refused_count(gateway)
    renamed = Person(mrn="MRN-PEERS", family="Kẻ", given="Mạo Danh", citizen="001190000909")
    assert _mllp_from(source, gateway.hl7_port, adt("A08", renamed)) == b""  # closed unread: no ACK at all
    [ds] = findscu(gateway.dicom_port, tmp_path / "1", "QueryRetrieveLevel=PATIENT", "PatientID=MRN-PEERS", "PatientName", model="-P")
    assert str(ds.PatientName) == "Trần^Văn Bình"
    assert f"HL7 connection from {source} refused" in gateway.log_tail(200)
    assert _refused_count(gateway) == refused_before + 1
    # Another loopback address is this host too.
    corrected = Person(mrn="MRN-PEERS", family="Trần", given="Thị Bình", citizen="001190000909")
    assert b"MSA|AA|" in _mllp_from("127.0.0.2", gateway.hl7_port, adt("A08", corrected))
    [ds] = findscu(gateway.dicom_port, tmp_path / "2", "QueryRetrieveLevel=PATIENT", "PatientID=MRN-PEERS", "PatientName", model="-P")
    assert str(ds.PatientName) == "Trần^Thị Bình"
    assert "accepting loopback peers only" in gateway.log_path.read_text(errors="replace")


def test_peer_rules_apply_to_ipv4_peers_of_a_dual_stack_socket() -> None:
    from gateway.peers import PeerAllowList

    local = PeerAllowList([], when_empty="loopback")
    assert local.allows("127.0.0.1") and local.allows("127.3.4.5") and local.allows("::1") and local.allows("::ffff:127.0.0.1")
    assert not any(local.allows(a) for a in ("10.1.2.3", "::ffff:10.1.2.3", "fd00::2", "192.0.2.2", "not an address"))
    named = PeerAllowList(["10.0.0.0/8"], when_empty="loopback")
    assert named.allows("10.1.2.3") and named.allows("::ffff:10.1.2.3") and not named.allows("127.0.0.1")
    dicom = PeerAllowList(["10.0.0.0/8"], when_empty="anyone")  # the DICOM SCP's: the same rules once networks are named
    assert dicom.allows("::ffff:10.1.2.3") and dicom.allows("10.9.9.9%eth0") and not dicom.allows("192.0.2.2")
    assert PeerAllowList([], when_empty="anyone").allows("192.0.2.2")
