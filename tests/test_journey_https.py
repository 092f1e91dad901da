"""HTTPS of the HTTP server, with real peers: curl, dicomweb-client, sslyze, and the gateway as its own process.

The product's default (a trial certificate made once in the data dir, its CA named in the
log), a certificate renewed on SIGHUP while a connection opened before goes on (one
process and under the supervisor), refusals at start (an unprotected key, an unprotected
de-identification secret), HSTS, and X-Forwarded-* taken from trusted proxies only.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dicomweb_client.api import DICOMwebClient

from tests.factory import Patient, ct_series, to_bytes
from tests.gateway_process import GatewayProcess
from tests.peers.tls_scan import scan

CURL = "/usr/bin/curl"
BOUNDARY = "PACSGWHTTPS"


def _serial(gw: GatewayProcess, *, source: str = "127.0.0.1") -> int:
    """The serial number of the certificate a new handshake shows."""
    context = gw.ssl_context()
    assert context is not None
    with socket.create_connection(("127.0.0.1", gw.http_port), timeout=10, source_address=(source, 0)) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _renew(gw: GatewayProcess) -> int:
    """Replace the served certificate and key with new ones from the same CA, as an operator renewing it would."""
    from gateway.tls_certs import TrialCa

    ca_cert = x509.load_pem_x509_certificate((gw.tls_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((gw.tls_dir / "ca.key").read_bytes(), password=None)
    staged = gw.tls_dir / "renewed"
    issued = TrialCa(ca_cert, ca_key, gw.tls_dir / "ca.pem").issue(staged, "server", "localhost", hosts=["localhost", "127.0.0.1"])  # type: ignore[arg-type]
    os.replace(issued.key_file, gw.tls_dir / "server.key")
    os.replace(issued.cert_file, gw.tls_dir / "server.pem")
    return x509.load_pem_x509_certificate((gw.tls_dir / "server.pem").read_bytes()).serial_number


def _wait_log(gw: GatewayProcess, text: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while gw.log_path.read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, f"{count} x {text!r} not logged:\n{gw.log_tail()}"
        time.sleep(0.05)


def _stow_body(datasets) -> bytes:
    parts = [f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(ds) + b"\r\n" for ds in datasets]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _curl(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CURL, "-sS", "--max-time", "20", "--cacert", str(gw.ca_file), "-H", f"Authorization: Bearer {gw.token}", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "supervisor"])
def test_a_renewed_certificate_is_served_after_sighup_and_open_connections_go_on(tmp_path: Path, workers: int) -> None:
    gw = GatewayProcess(tmp_path / "gw", {}, https=True, workers=workers)
    gw.start()
    try:
        series = ct_series(24, size=512)  # 12 MiB: far more than the socket buffers hold
        stow = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}', "Accept": "application/dicom+json"}
        assert gw.send("POST", "/dicom-web/studies", _stow_body(series), stow)[0] == 200
        gw.wait_idle()
        old = _serial(gw)
        kept = http.client.HTTPSConnection("127.0.0.1", gw.http_port, context=gw.ssl_context(), timeout=10)
        kept.request("GET", "/health")
        assert kept.getresponse().read() and kept.sock is not None
        kept_socket = kept.sock
        # A study download under way: its first bytes read, the rest still to come from the gateway.
        streaming = http.client.HTTPSConnection("127.0.0.1", gw.http_port, context=gw.ssl_context(), timeout=30)
        raw = socket.create_connection(("127.0.0.1", gw.http_port), timeout=30)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # no autotuning: most of the study waits server-side
        streaming.sock = gw.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")  # type: ignore[union-attr]
        streaming.request("GET", f"/dicom-web/studies/{series[0].StudyInstanceUID}",
                          headers={**gw.auth_headers, "Accept": 'multipart/related; type="application/dicom"'})  # fmt: skip
        download = streaming.getresponse()
        assert download.status == 200
        first = download.read(65536)

        new = _renew(gw)
        assert new != old
        os.kill(gw.proc.pid, signal.SIGHUP)  # the supervisor, under serve.workers 2: it passes it on
        _wait_log(gw, "HTTPS: TLS certificate reloaded", workers)
        # Every worker shows the new one now (new connections are spread over the workers' shared port).
        assert {_serial(gw) for _ in range(12)} == {new}
        rest = download.read()  # the download goes on to its end over the session it began with
        assert len(first) + len(rest) > 24 * 512 * 512 * 2
        assert all(str(ds.SOPInstanceUID).encode() in first + rest for ds in series)
        assert x509.load_der_x509_certificate(streaming.sock.getpeercert(binary_form=True)).serial_number == old  # type: ignore[union-attr, arg-type]
        streaming.close()
        kept.request("GET", "/health")  # the connection opened before: same socket, same session, still served
        response = kept.getresponse()
        assert response.status == 200 and json.loads(response.read())["live"] is True
        assert kept.sock is kept_socket and kept_socket.getpeercert(binary_form=True) is not None
        assert x509.load_der_x509_certificate(kept_socket.getpeercert(binary_form=True)).serial_number == old  # type: ignore[arg-type]
        kept.close()

        # A renewal with an unprotected key is refused: the one in use stays, and the gateway goes on.
        _renew(gw)
        (gw.tls_dir / "server.key").chmod(0o644)
        os.kill(gw.proc.pid, signal.SIGHUP)
        _wait_log(gw, "TLS certificate not reloaded", workers)
        assert {_serial(gw) for _ in range(6)} == {new}
        assert gw.get("/health")[0] == 200
        assert gw.proc.poll() is None
    finally:
        gw.kill()


def test_by_default_https_with_a_trial_ca_made_once_and_named_in_the_log(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "gw", {}, product_defaults=True, workers=2)
    gw.start()  # under the supervisor, which makes the trial set before its workers start
    try:
        tls_dir = tmp_path / "gw" / "tls"
        assert sorted(p.name for p in tls_dir.iterdir()) == ["ca.pem", "server.key", "server.pem"]  # no CA key kept
        assert (tls_dir / "server.key").stat().st_mode & 0o077 == 0 and tls_dir.stat().st_mode & 0o077 == 0
        log = gw.log_path.read_text()
        assert log.count("made a trial CA") == 1
        assert "TRIAL certificate" in log and f"curl --cacert {tls_dir / 'ca.pem'}" in log
        first = _serial(gw)

        shown = _curl(gw, "-i", f"{gw.base_url}/health")
        assert shown.returncode == 0, shown.stderr
        assert "Strict-Transport-Security: max-age=31536000" in shown.stdout
        # Plain HTTP on the HTTPS port fails at once, not after a timeout.
        started = time.monotonic()
        plain = subprocess.run([CURL, "-sS", "--max-time", "20", f"http://127.0.0.1:{gw.http_port}/health"], capture_output=True, text=True)
        assert plain.returncode != 0 and time.monotonic() - started < 5, plain
        untrusted = subprocess.run([CURL, "-sS", "--max-time", "20", f"{gw.base_url}/health"], capture_output=True, text=True)
        assert untrusted.returncode == 60, untrusted  # curl: the peer's certificate cannot be verified

        gw.stop()
        gw.start()  # the same trial set again: clients that trust its CA keep trusting it
        assert gw.log_path.read_text().count("made a trial CA") == 1 and _serial(gw) == first
    finally:
        gw.kill()


@pytest.fixture(scope="module")
def https_gateway(tmp_path_factory: pytest.TempPathFactory):
    gw = GatewayProcess(tmp_path_factory.mktemp("https") / "gw", {}, https=True)
    gw.start()
    yield gw
    gw.kill()


def test_sslyze_finds_bcp195_only_on_the_https_port(https_gateway: GatewayProcess) -> None:
    assert https_gateway.ca_file is not None
    scan(https_gateway.http_port, ca_file=https_gateway.ca_file).assert_bcp195()


def test_curl_stores_finds_and_retrieves_over_https(https_gateway: GatewayProcess, tmp_path: Path) -> None:
    gw = https_gateway
    series = ct_series(2, size=16, patient=Patient(patient_id="HTTPS-CURL"))
    body = tmp_path / "stow.bin"
    body.write_bytes(_stow_body(series))
    study = str(series[0].StudyInstanceUID)
    stored = _curl(
        gw, "-X", "POST", "--data-binary", f"@{body}", "-H", "Accept: application/dicom+json",
        "-H", f'Content-Type: multipart/related; type="application/dicom"; boundary={BOUNDARY}', f"{gw.base_url}/dicom-web/studies",
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    answer = json.loads(stored.stdout)
    assert answer["00081190"]["Value"] == [f"{gw.base_url}/dicom-web/studies/{study}"]  # an https URL
    gw.wait_idle()
    found = _curl(gw, "-H", "Accept: application/dicom+json", f"{gw.base_url}/dicom-web/studies?StudyInstanceUID={study}")
    assert found.returncode == 0 and json.loads(found.stdout)[0]["00201208"]["Value"] == [2], found
    out = tmp_path / "instance.dcm"
    uid = f"{study}/series/{series[0].SeriesInstanceUID}/instances/{series[0].SOPInstanceUID}"
    got = _curl(gw, "-o", str(out), "-w", "%{http_code}", "-H", 'Accept: multipart/related; type="application/dicom"', f"{gw.base_url}/dicom-web/studies/{uid}")
    assert got.stdout == "200" and series[0].PixelData in out.read_bytes()


def test_dicomweb_client_stores_finds_and_retrieves_over_https(https_gateway: GatewayProcess) -> None:
    gw = https_gateway
    session = requests.Session()
    session.verify = str(gw.ca_file)
    session.trust_env = False  # else requests lets REQUESTS_CA_BUNDLE (the system's CAs, here) win over verify
    client = DICOMwebClient(url=f"{gw.base_url}/dicom-web", headers=gw.auth_headers, session=session)
    series = ct_series(3, size=16, patient=Patient(patient_id="HTTPS-DWC"))
    response = client.store_instances(series)
    assert [i.ReferencedSOPInstanceUID for i in response.ReferencedSOPSequence] == [ds.SOPInstanceUID for ds in series]
    gw.wait_idle()
    assert len(client.search_for_instances(study_instance_uid=series[0].StudyInstanceUID)) == 3
    got = client.retrieve_instance(series[1].StudyInstanceUID, series[1].SeriesInstanceUID, series[1].SOPInstanceUID)
    assert got.PixelData == series[1].PixelData
    # Without the CA the same client refuses the server.
    system = requests.Session()
    system.trust_env = False  # the system's CAs only
    refusing = DICOMwebClient(url=f"{gw.base_url}/dicom-web", headers=gw.auth_headers, session=system, timeout=5)
    refusing.set_http_retry_params(retry=False)
    with pytest.raises(requests.exceptions.SSLError):
        refusing.search_for_studies()


def _start_fails(gw: GatewayProcess) -> str:
    with pytest.raises(RuntimeError) as failed:
        gw.start()
    assert gw.proc is not None and gw.proc.returncode == 1
    return str(failed.value)


def test_refuses_to_start_with_an_unprotected_key_or_secret(tmp_path: Path) -> None:
    from gateway.tls_certs import write_trial_set

    unprotected = GatewayProcess(tmp_path / "a", {}, https=True)
    _ca, server = write_trial_set(unprotected.tls_dir, ["localhost"])
    server.key_file.chmod(0o640)
    message = _start_fails(unprotected)
    assert f"cannot start: HTTPS private key {server.key_file} may be read or changed by other users (mode 0640)" in message
    assert f"chmod 600 {server.key_file}" in message

    missing = GatewayProcess(tmp_path / "b", {"PACSGW_HTTP_TLS_KEY_FILE": str(tmp_path / "none.key")}, https=True)
    assert f"HTTPS private key {tmp_path / 'none.key'}: cannot read it" in _start_fails(missing)

    secret = tmp_path / "deid-secret"
    secret.write_text("s" * 40 + "\n")
    secret.chmod(0o644)
    refused = _start_fails(GatewayProcess(tmp_path / "c", {"PACSGW_DEID_SECRET_FILE": str(secret)}))
    assert f"deid.secret_file {secret} may be read or changed by other users (mode 0644)" in refused
    secret.chmod(0o600)
    gw = GatewayProcess(tmp_path / "c", {"PACSGW_DEID_SECRET_FILE": str(secret)})
    gw.start()
    gw.kill()


def _send_from(gw: GatewayProcess, source: str, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=15, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={**gw.auth_headers, **headers})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_forwarded_headers_count_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    """Plain HTTP behind a proxy (127.0.0.2 here); X-Forwarded-* from anyone else change nothing."""
    gw = GatewayProcess(tmp_path / "gw", {"PACSGW_HTTP_PUBLIC_URL": "", "PACSGW_NETWORK_TRUSTED_PROXIES": "127.0.0.2"})
    gw.start()
    try:
        forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "10.9.9.9"}
        stow = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}', "Accept": "application/dicom+json"}

        def retrieve_url(source: str, headers: dict[str, str]) -> tuple[str, dict]:
            series = ct_series(1, size=8)
            status, sent, raw = _send_from(gw, source, "POST", "/dicom-web/studies", _stow_body(series), {**stow, **headers})
            assert status == 200, raw
            return json.loads(raw)["00081190"]["Value"][0], sent

        url, sent = retrieve_url("127.0.0.1", forged)
        assert url.startswith(f"http://127.0.0.1:{gw.http_port}/dicom-web/studies/")
        assert "Strict-Transport-Security" not in sent

        # The proxy's word is taken: the URL a client behind it calls, and HSTS for that client's HTTPS.
        url, sent = retrieve_url("127.0.0.2", {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.vn"})
        assert url.startswith("https://pacs.example.vn/dicom-web/studies/")
        assert sent["Strict-Transport-Security"] == "max-age=31536000"
        # What a client put before the proxy's own value is not.
        url, _ = retrieve_url("127.0.0.2", {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "evil.example, pacs.example.vn"})
        assert url.startswith("http://pacs.example.vn/dicom-web/studies/")
        # Nothing that could bend a URL is taken even from the proxy.
        url, _ = retrieve_url("127.0.0.2", {"X-Forwarded-Host": "evil.example/x?"})
        assert url.startswith(f"http://127.0.0.1:{gw.http_port}/dicom-web/studies/")

        events = gw.audit_events(lambda ev: sum(e.get("source") == "127.0.0.2" for e in ev) >= 3)
        sources = {e.get("source") for e in events}
        assert "10.9.9.9" not in sources and "127.0.0.1" in sources  # the forged X-Forwarded-For was not taken
    finally:
        gw.kill()


def test_sign_in_cookies_are_secure_and_its_redirect_honest_over_https_only(tmp_path: Path) -> None:
    """The identity provider's sign-in: its cookies Secure, and its redirect URI, follow the same rule as URLs."""
    from urllib.parse import parse_qs, urlsplit

    from tests.peers.oidc import http_call, run_provider_mock

    def sign_in(gw: GatewayProcess, source: str, headers: dict[str, str]) -> tuple[str, str]:
        if gw.tls:
            status, sent, _ = http_call(gw.base_url + "/auth/oidc/login", headers=headers, context=gw.ssl_context())
        else:
            status, sent, _ = _send_from(gw, source, "GET", "/auth/oidc/login", b"", headers)
        assert status == 302, sent
        return sent["Set-Cookie"], parse_qs(urlsplit(sent["Location"]).query)["redirect_uri"][0]

    with run_provider_mock(tmp_path) as provider:
        sso = {"PACSGW_OIDC_ISSUER": provider.base_url, "PACSGW_OIDC_AUDIENCE": "pacs", "PACSGW_OIDC_CLIENT_ID": "viewer"}
        behind = GatewayProcess(tmp_path / "plain", {**sso, "PACSGW_HTTP_PUBLIC_URL": "", "PACSGW_NETWORK_TRUSTED_PROXIES": "127.0.0.2"})
        behind.start()
        try:
            forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
            cookie, redirect = sign_in(behind, "127.0.0.1", forged)
            assert "Secure" not in cookie and redirect == f"http://127.0.0.1:{behind.http_port}/auth/oidc/callback"
            cookie, redirect = sign_in(behind, "127.0.0.2", {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.vn"})
            assert "Secure" in cookie and redirect == "https://pacs.example.vn/auth/oidc/callback"
        finally:
            behind.kill()
        own = GatewayProcess(tmp_path / "https", sso, https=True)
        own.start()
        try:
            cookie, redirect = sign_in(own, "127.0.0.1", {})
            assert "Secure" in cookie and redirect == f"{own.base_url}/auth/oidc/callback"
        finally:
            own.kill()
