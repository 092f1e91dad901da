"""Journey: a hospital turns the plain DICOM port off and receives over DICOM TLS only, under the supervisor.

The modality shows its certificate (bound to its AE title), stores a study, the radiologist finds it on DICOMweb;
the operator renews the gateway's certificate and sends SIGHUP: the next modality association sees the new
certificate, with no worker restarted.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import ct_series, write_files
from tests.gateway.dimse.raw_peer import until
from tests.gateway.dimse.tls_peer import Pki, dcmtk, tls_options
from tests.gateway_process import GatewayProcess
from tests.peers.ports import free_port


def _server_serial(port: int, ca_file: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the handshake fails for want of a client certificate after ours is seen
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_tls_only_gateway_under_the_supervisor(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    live = tmp_path / "live"  # where the operator keeps the certificate the gateway reads
    live.mkdir()
    shutil.copy(pki.server.cert_file, live / "gw.pem")
    shutil.copy(pki.server.key_file, live / "gw.key")
    tls_port = free_port()
    gateway = GatewayProcess(tmp_path / "gw", {
        "PACSGW_DICOM_TLS_PORT": str(tls_port),
        "PACSGW_DICOM_TLS_PLAIN": "false",
        "PACSGW_DICOM_TLS_CERTIFICATE_FILE": str(live / "gw.pem"),
        "PACSGW_DICOM_TLS_PRIVATE_KEY_FILE": str(live / "gw.key"),
        "PACSGW_DICOM_TLS_CLIENT_CA_FILE": str(pki.ca.cert_file),
        "PACSGW_DICOM_TLS_CLIENT_AETS": "CT01=CT01",
    }, workers=2)  # fmt: skip
    gateway.start()
    try:
        with pytest.raises(ConnectionRefusedError):  # the plain port is not opened by any worker
            socket.create_connection(("127.0.0.1", gateway.dicom_port), timeout=5).close()
        series = ct_series(4, size=32)
        files = write_files(series, tmp_path / "files")
        stored = dcmtk("storescu", *tls_options(pki, pki.ct01), "-aet", "CT01", "-aec", "PACSGW", "localhost",
                       str(tls_port), *map(str, files))  # fmt: skip
        assert stored.returncode == 0, stored.stderr
        refused = dcmtk("echoscu", *tls_options(pki, pki.ct01), "-aet", "MR01", "-aec", "PACSGW", "localhost", str(tls_port))
        assert "Calling AE Title Not Recognized" in refused.stderr
        gateway.wait_idle()
        status, found = gateway.get(f"/dicom-web/studies/{series[0].StudyInstanceUID}/instances")
        assert status == 200 and len(found) == 4
        status, health = gateway.get("/health")
        assert status == 200 and health["dicom"]["port"] is None and health["dicom"]["tls_port"] == tls_port

        old = _server_serial(tls_port, pki.ca.cert_file)
        pids = {w["pid"] for w in gateway.workers_view()}
        renewed = pki.ca.issue(tmp_path / "renewed", "server", "localhost", hosts=["localhost", "127.0.0.1"])
        shutil.copy(renewed.cert_file, live / "gw.pem")
        shutil.copy(renewed.key_file, live / "gw.key")
        assert gateway.proc is not None
        os.kill(gateway.proc.pid, signal.SIGHUP)
        # Every worker reloads: a few handshakes, each landing on either worker, all show the new certificate.
        assert until(lambda: all(_server_serial(tls_port, pki.ca.cert_file) != old for _ in range(6)), 10)
        assert {w["pid"] for w in gateway.workers_view()} == pids
        echoed = dcmtk("echoscu", *tls_options(pki, pki.ct01), "-aet", "CT01", "-aec", "PACSGW", "localhost", str(tls_port))
        assert echoed.returncode == 0, echoed.stderr
    finally:
        gateway.kill()


def test_the_tls_port_in_use_fails_the_start_with_its_name(tmp_path: Path) -> None:
    """Under the supervisor the TLS port is checked before any child starts; with the plain port off, a program
    holding `dicom.port` is no concern of the gateway's."""
    pki = Pki.create(tmp_path / "pki")
    tls_port = free_port()
    gateway = GatewayProcess(tmp_path / "gw", {
        "PACSGW_DICOM_TLS_PORT": str(tls_port),
        "PACSGW_DICOM_TLS_PLAIN": "false",
        "PACSGW_DICOM_TLS_CERTIFICATE_FILE": str(pki.server.cert_file),
        "PACSGW_DICOM_TLS_PRIVATE_KEY_FILE": str(pki.server.key_file),
    }, workers=2)  # fmt: skip
    holders = []
    try:
        for port in (gateway.dicom_port, tls_port):
            holder = socket.socket()
            holder.bind(("127.0.0.1", port))
            holder.listen()
            holders.append(holder)
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve"], env=gateway._environment(), capture_output=True, text=True,
            timeout=120,
        )
    finally:
        for holder in holders:
            holder.close()
    assert result.returncode == 1
    assert f"cannot start: DICOM TLS port 127.0.0.1:{tls_port}: in use" in result.stderr, result.stderr
