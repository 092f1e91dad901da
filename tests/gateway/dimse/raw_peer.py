"""Peers and probes for the acceptor tests: raw PDUs no well-behaved SCU would send; what the gateway shows (metrics, log)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence

from pydicom.dataset import Dataset
from pynetdicom import AE
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateway.dimse import pdu
from gateway.dimse.commands import decode_command, encode_command
from tests.gateway_process import GatewayProcess

VERIFICATION = "1.2.840.10008.1.1"


def request(
    contexts: Sequence[tuple[str, str]], calling: str = "RAW", called: str = "PACSGW", *, scp_roles: tuple[str, ...] = ()
) -> bytes:
    """An A-ASSOCIATE-RQ proposing each (abstract syntax, transfer syntax) as contexts 1, 3, 5...

    ``scp_roles``: SOP classes we offer to take C-STOREs for (as a C-GET requester does)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    for sop_class in scp_roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = sop_class
        role.scu_role, role.scp_role = False, True
        primitive.user_information.append(role)
    items = []
    for number, (abstract, transfer) in enumerate(contexts):
        cx = build_context(abstract, [transfer])
        cx.context_id = 2 * number + 1
        items.append(cx)
    primitive.presentation_context_definition_list = items
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return rq.encode()


def command(field: int, message_id: int = 1, *, with_dataset: bool = False, **attributes: object) -> bytes:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.CommandField = field
    ds.MessageID = message_id
    ds.CommandDataSetType = 0x0000 if with_dataset else 0x0101
    return encode_command(ds)


def echo_rq(message_id: int = 1) -> bytes:
    """A whole C-ECHO-RQ on presentation context 1, as one P-DATA-TF PDU."""
    return pdu.p_data(1, command(0x0030, message_id, AffectedSOPClassUID=VERIFICATION), command=True, max_pdu=0)


def fragment(context_id: int, data: bytes, *, command: bool, last: bool) -> bytes:
    """One P-DATA-TF PDU carrying one fragment, last or not."""
    control = (pdu.COMMAND if command else 0) | (pdu.LAST_FRAGMENT if last else 0)
    item = struct.pack(">IBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BxI", pdu.P_DATA_TF, len(item)) + item


class RawPeer:
    """A TCP connection to the gateway's SCP, from ``source`` (any 127/8 address) when given."""

    def __init__(
        self, port: int, source: str | None = None, timeout: float = 10, receive_buffer: int = 0,
        pace: tuple[int, float] | None = None,
    ) -> None:
        """``pace``: read at most that many bytes, then pause that many seconds (a slow link)."""
        self.pace, self._unpaced = pace, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:  # before connecting, so that the window offered stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> tuple[int, bytes]:
        header = self._exactly(6)
        pdu_type, length = struct.unpack(">BxI", header)
        return pdu_type, self._exactly(length)

    def _exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(min(n - len(out), self.pace[0] - self._unpaced if self.pace else n))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
            if self.pace:
                self._unpaced += len(chunk)
                if self._unpaced >= self.pace[0]:
                    self._unpaced = 0
                    time.sleep(self.pace[1])
        return bytes(out)

    def message(self) -> tuple[Dataset, bytes | None]:
        """The next whole DIMSE message: its command, and its dataset when one follows."""
        command_bytes, dataset = bytearray(), bytearray()
        while True:
            pdu_type, body = self.receive()
            if pdu_type != pdu.P_DATA_TF:
                raise ConnectionError(f"PDU type 0x{pdu_type:02x} instead of a message")
            for _, control, data in pdu.iter_pdvs(struct.pack(">BxI", pdu_type, len(body)) + body):
                (command_bytes if control & pdu.COMMAND else dataset).extend(data)
                if control & pdu.LAST_FRAGMENT:
                    if not control & pdu.COMMAND:
                        return decode_command(bytes(command_bytes)), bytes(dataset)
                    ds = decode_command(bytes(command_bytes))
                    if int(ds.CommandDataSetType) == 0x0101:
                        return ds, None

    def final_response(self) -> Dataset:
        """Read responses until one that is not pending (0xFF00, 0xFF01): that one's command."""
        while True:
            ds, _ = self.message()
            if int(ds.Status) not in (0xFF00, 0xFF01):
                return ds

    def associate(self, contexts: Sequence[tuple[str, str]] | None = None, calling: str = "RAW") -> None:
        self.send(request(contexts or [(CTImageStorage, ExplicitVRLittleEndian)], calling=calling))
        assert self.receive()[0] == pdu.A_ASSOCIATE_AC

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionError:
            return True

    def closed_within(self, seconds: float) -> bool:
        """Whether the gateway closes the connection within ``seconds`` (anything it sends first is read and dropped)."""
        timeout, deadline = self.sock.gettimeout(), time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(min(left, 0.2))
                try:
                    if self.sock.recv(65536) == b"":
                        return True
                except TimeoutError:
                    continue
                except OSError:
                    return True
            return False
        finally:
            self.sock.settimeout(timeout)

    def is_open(self) -> bool:
        """Whether the gateway still holds the connection, without waiting."""
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(timeout)


def echo(port: int, calling: str = "CT01", source: str | None = None) -> int:
    """C-ECHO with pynetdicom, as a modality would; the status, or -1 when the association is not accepted."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 5
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW", bind_address=(source or "127.0.0.1", 0))
    if not assoc.is_established:
        return -1
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def gauges(gateway: GatewayProcess) -> dict[str, float]:
    """The gateway's Prometheus samples without labels, by name."""
    status, text = gateway.get("/metrics")
    assert status == 200, text
    samples = (line.split(" ") for line in text.splitlines() if line and not line.startswith("#") and "{" not in line)
    return {name: float(value) for name, value in samples}


def wait_settled(gateway: GatewayProcess, timeout: float = 10) -> None:
    """Wait until the gateway holds no association and no connection waiting for its request."""
    deadline = time.monotonic() + timeout
    while True:
        now = gauges(gateway)
        if now["pacsgw_dicom_associations"] == 0 and now.get("pacsgw_dicom_connections_waiting", 0) == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"gateway still holds connections: {now['pacsgw_dicom_associations']} associated")
        time.sleep(0.05)


def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class LogWindow:
    """The gateway's log lines written from now on."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.path = gateway.log_path
        self.offset = self.path.stat().st_size

    def lines(self) -> list[str]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            return fh.read().decode(errors="replace").splitlines()

    def faults(self) -> list[str]:
        """Lines of tracebacks or errors: a peer's bytes must never cause one."""
        return [line for line in self.lines() if "Traceback" in line or " ERROR " in line]

    def warnings(self) -> list[str]:
        return [line for line in self.lines() if " WARNING " in line]


def stored_large_study(gateway: GatewayProcess) -> Dataset:
    """An 8 MiB CT instance stored through the gateway and filed; the identifier that retrieves its study."""
    from tests.factory import ct_series

    (large,) = ct_series(1, size=2048)
    ae = AE(ae_title="RAW")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="PACSGW")
    assert assoc.is_established and assoc.send_c_store(large).Status == 0
    assoc.release()
    gateway.wait_idle()
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = large.StudyInstanceUID
    return identifier
