"""The repository's operator-facing files stay true to the code."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _compose_env(service: dict) -> dict[str, str]:
    """The service's environment as compose fills it in: defaults taken, required variables (``:?``) set to "secret"."""
    def fill(value: object) -> str:
        return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "secret", re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))

    return {key: fill(value) for key, value in service["environment"].items()}


def test_compose_file_is_valid_and_its_settings_load() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"gateway1", "gateway2", "haproxy", "minio", "postgres"}
    nodes = [services["gateway1"], services["gateway2"]]
    assert _compose_env(nodes[0]) == _compose_env(nodes[1])  # one site: the same index, bucket and public URL
    settings = load_settings(environ=_compose_env(nodes[0]))  # every variable is a real, well-typed option
    assert settings.storage.backend == "s3" and settings.s3.endpoint == "minio:9000"
    assert settings.index_url.startswith("postgresql+psycopg://pacs:") and settings.index_url.endswith("@postgres/pacs")
    assert settings.http.public_url == "http://localhost:8042"  # the balancer's address, not a node's
    # Each node its own name and its own spool; only the balancer is reachable from outside.
    assert [n["hostname"] for n in nodes] == ["gateway1", "gateway2"]
    assert len({n["volumes"][0].split(":")[0] for n in nodes}) == 2 and all(n["volumes"][0].endswith(":/data") for n in nodes)
    assert not any("ports" in n for n in nodes)
    ports = {settings.dicom.port, settings.http.port, settings.hl7.port}
    published = services["haproxy"]["ports"]
    assert ports <= {int(p.split(":")[-2]) for p in published}
    assert [p for p in published if p.split(":")[-1] == "8404"] == ["127.0.0.1:8404:8404"]  # the status page: this host
    assert "ports" not in services["minio"] and "ports" not in services["postgres"]  # no console, no database outside
    # No known passwords: each must be set (${VAR:?...}), and the nodes trust HAProxy's address only.
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"PASSWORD:-", text) and len(re.findall(r"\$\{[A-Z_]*PASSWORD:\?", text)) >= 4
    assert settings.network.trusted_proxies == [services["haproxy"]["networks"]["default"]["ipv4_address"]]
    [mount] = services["haproxy"]["volumes"]
    assert mount.startswith("./deploy/haproxy.cfg:")
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, check=True)


def test_the_balancer_config_sends_each_protocol_to_every_node() -> None:
    """deploy/haproxy.cfg: DICOM and MLLP in TCP mode, HTTP in HTTP mode checked on /health, every node in each."""
    config = (ROOT / "deploy" / "haproxy.cfg").read_text()
    settings = load_settings(environ={})
    backends = {m[1]: m[2] for m in re.finditer(r"^backend (\S+)\n(.*?)(?=^\S|\Z)", config, re.MULTILINE | re.DOTALL)}
    wanted = {"dicom_nodes": ("tcp", settings.dicom.port), "mllp_nodes": ("tcp", settings.hl7.port), "http_nodes": ("http", settings.http.port)}
    assert set(backends) == set(wanted)
    for name, (mode, port) in wanted.items():
        body = backends[name]
        assert f"mode {mode}" in body and "check" in body
        assert re.findall(r"server (\S+) (\S+) check", body) == [("gateway1", f"gateway1:{port}"), ("gateway2", f"gateway2:{port}")]
    assert "http-check send meth GET uri /health/ingest\n" in backends["http_nodes"]  # can take instances
    for name in ("dicom_nodes", "mllp_nodes"):  # the client's address reaches the node (network.trusted_proxies)
        assert all("send-proxy-v2" in line for line in re.findall(r"^    server .*$", backends[name], re.M))
    assert "option forwardfor" in config
    assert re.search(r'^\.if defined\(HAPROXY_STATS_PASSWORD\)\n(?:.*\n)*?    stats auth "\$\{HAPROXY_STATS_USER\}:\$\{HAPROXY_STATS_PASSWORD\}"\n\.endif', config, re.M)
    for frontend, port in (("dicom", settings.dicom.port), ("mllp", settings.hl7.port), ("http", settings.http.port)):
        assert re.search(rf"^frontend {frontend}\n(?:    .*\n)*?    bind :{port}$", config, re.MULTILINE)
    if Path("/usr/sbin/haproxy").exists():  # the file as HAProxy reads it (names resolve only on the compose network)
        checked = subprocess.run(["/usr/sbin/haproxy", "-c", "-q", "-f", str(ROOT / "deploy" / "haproxy.cfg")], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/test" in readme and "./scripts/run" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("script", ["scripts/test", "scripts/run", ".ci/run"])
def test_scripts_are_executable(script: str) -> None:
    assert (ROOT / script).stat().st_mode & 0o111


# What the image runs (Dockerfile): a wheel of the project, installed with its codecs into a fresh venv.
# Built and installed here the same way, so a module or data file left out of the wheel fails here,
# where Docker itself is not installed.

def _tracked_package_files() -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "gateway", "storage", "dicom_rules", "viewer"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:  # not a git checkout: every file below the packages
        return {str(p.relative_to(ROOT)) for d in ("gateway", "storage", "dicom_rules", "viewer") for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return set(listed.stdout.split())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [built] = out.glob("pacs_gateway-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        inside = set(archive.namelist())
    missing = sorted(f for f in _tracked_package_files() if f not in inside)
    assert not missing, f"left out of the wheel: {missing}"


def test_the_dockerfile_installs_the_wheel() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip wheel" in dockerfile and ".whl)[codecs]" in dockerfile
    assert not re.search(r"^COPY (gateway|storage|dicom_rules|viewer)\b", dockerfile, re.M), "the image must run the wheel"


def test_the_installed_wheel_serves_the_viewer_and_dicomweb(wheel: Path, tmp_path: Path) -> None:
    from pynetdicom import AE

    from tests.factory import ct_series
    from tests.peers.ports import free_port

    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=120)  # type: ignore[attr-defined]
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[codecs]"], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    console = venv / "bin" / "pacs-gateway"
    home = tmp_path / "home"  # away from the source tree, so nothing is imported from it
    home.mkdir()
    rules = home / "rules.toml"
    rules.write_text('[defaults]\nmode = "pseudonymised"\n')  # the de-identification tables must be in the wheel
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACSGW_", "PYTHON"))}
    dicom_port, http_port = free_port(), free_port()
    env.update(
        PACSGW_DATA_DIR=str(home / "data"), PACSGW_DEID_RULES_FILE=str(rules),
        PACSGW_DEID_SECRET="wheel-secret-0123456789abcdefghijklmnop", PACSGW_HL7_PORT=str(free_port()),
        PACSGW_HL7_HOST="127.0.0.1", PACSGW_DICOM_HOST="127.0.0.1", PACSGW_HTTP_HOST="127.0.0.1",
    )  # fmt: skip
    run = functools.partial(subprocess.run, cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert run([str(console), "user", "add", "svc", "--role", "admin", "--no-password"]).returncode == 0
    token = run([str(console), "user", "token", "svc"]).stdout.strip()
    where = run([str(venv / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"]).stdout
    assert str(venv) in where, where
    log = open(home / "serve.log", "wb")
    proc = subprocess.Popen(
        [str(console), "serve", "--dicom-port", str(dicom_port), "--http-port", str(http_port)],
        cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"https://127.0.0.1:{http_port}"  # a fresh install: HTTPS with the trial certificate it makes

    def get(path: str, auth: bool = True) -> tuple[int, bytes, str]:
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if auth else {})
        trial_ca = ssl.create_default_context(cafile=str(home / "data" / "tls" / "ca.pem"))
        try:
            with urllib.request.urlopen(request, timeout=10, context=trial_ca) as response:
                return response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("Content-Type", "")

    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (home / "serve.log").read_text()
            try:
                if get("/health", auth=False)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (home / "serve.log").read_text()
            time.sleep(0.1)
        # The image's health check, as Docker runs it (a shell), against this install.
        [probe] = re.findall(r"^HEALTHCHECK .*? CMD (.*)$", (ROOT / "Dockerfile").read_text(), re.M)
        probe = probe.replace("8042", str(http_port)).replace("python -c", f"{venv / 'bin' / 'python'} -c", 1)
        assert subprocess.run(["/bin/sh", "-c", probe], env=env, timeout=30).returncode == 0
        status, body, ctype = get("/viewer/", auth=False)
        assert status == 200 and "text/html" in ctype and b"<script" in body
        for asset in re.findall(rb'(?:src|href)="(?:/viewer/|\./)?([\w.-]+\.(?:js|css))"', body):
            assert get("/viewer/" + asset.decode(), auth=False)[0] == 200, asset

        ae = AE(ae_title="CT01")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", dicom_port, ae_title="PACSGW")
        assert assoc.is_established
        [instance] = ct_series(1)
        assert assoc.send_c_store(instance).Status == 0
        assoc.release()
        deadline = time.monotonic() + 30
        while True:
            status, body, ctype = get("/dicom-web/studies")
            if status == 200 and json.loads(body):
                break
            assert status in (200, 204) and time.monotonic() < deadline, (status, body)
            time.sleep(0.1)
        [study] = json.loads(body)
        assert "application/dicom+json" in ctype and study["00100020"]["Value"][0].startswith("PGW")
        assert get("/dicom-web/studies", auth=False)[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
