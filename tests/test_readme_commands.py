"""Every command the README shows, run as a user types it: the installed console script, as a subprocess.

The first-admin steps are run word for word from the README, at a terminal that answers the password
prompts. The synopsis under "Using it" is read from the README, and each of its commands is run here; a
command added to the README without a test here fails ``test_the_synopsis_names_only_commands_tested_here``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shlex
import signal
import ssl
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from pydicom import dcmread
from pynetdicom import AE

from tests.factory import Patient, ct_series, write_files
from tests.peers.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONSOLE = Path(sys.executable).with_name("pacs-gateway")  # the console script pip installed into the venv
SECRET = "readme-secret-0123456789abcdefghijklmnop"
PASSWORD = "correct horse battery staple 7"

# The command forms the synopsis shows, each run by a test below.
TESTED_FORMS = {
    "serve", "import", "anonymise", "vault find", "vault reveal", "quarantine list", "quarantine export",
    "user add", "user token", "user revoke", "user password", "user unlock", "user reset-totp", "user link", "user grant",
    "user audit-digest",
    "spool drain", "tls self-signed", "config", "python -m gateway",
}  # fmt: skip


def _sh_block_after(marker: str) -> list[str]:
    """The lines of the first ```sh block after ``marker`` in the README."""
    start = README.index(marker)
    block = README.index("```sh\n", start) + len("```sh\n")
    return README[block : README.index("```", block)].splitlines()


def _synopsis_forms() -> set[str]:
    forms: set[str] = set()
    command = ""
    for line in _sh_block_after("## Using it"):
        text = line.split("#", 1)[0].strip()
        if text.startswith("python -m gateway"):
            forms.add("python -m gateway")
            continue
        if text.startswith("pacs-gateway "):
            command, text = text.split()[1], " ".join(text.split()[2:])
        elif not text.startswith("|"):
            continue
        alternatives = [a.strip() for a in f" {text} ".split(" | ")]  # "admin|radiologist" is one value
        subcommands = [a.split()[0] for a in alternatives if a and not a.startswith(("[", "-")) and a.split()[0].islower()]
        if command in ("vault", "quarantine", "user", "spool", "tls"):
            forms.update(f"{command} {s}" for s in subcommands)
        else:
            forms.add(command)
    return forms


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACSGW_")}
    return {**env, **extra}


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE), *map(str, args)], cwd=cwd, env=env or _clean_env(), input=stdin, capture_output=True, text=True, timeout=120
    )


def _at_terminal(command: str, *, cwd: Path, env: dict[str, str], answers: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run a shell command line at a pseudo-terminal (its controlling terminal), typing ``answers`` at each prompt."""
    master, slave = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        ["/bin/sh", "-c", command], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
        start_new_session=True, preexec_fn=take_terminal,
    )  # fmt: skip
    os.close(slave)
    output, pending, answered_at = b"", list(answers), 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the terminal closes with the process
                    break
                if not chunk:
                    break
                output += chunk
            # A new prompt only: getpass flushes what was typed ahead of its prompt.
            if pending and output[answered_at:].strip() and output.rstrip().endswith(b":"):
                os.write(master, pending.pop(0).encode() + b"\n")
                answered_at = len(output)
            if not ready and proc.poll() is not None:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def _http(
    url: str, token: str | None = None, data: bytes | None = None, headers: dict[str, str] | None = None, *, ca: Path
) -> tuple[int, Any]:
    """A request to a gateway serving HTTPS with the certificate of CA ``ca`` (its trial CA, by default)."""
    sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=10, context=ssl.create_default_context(cafile=str(ca))) as response:
            raw, status = response.read(), response.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


class Served:
    """``pacs-gateway serve`` started as the README shows it, stopped with SIGTERM as a service manager does.

    It serves HTTPS with the trial certificate it makes in its data dir (``--data-dir``, else ``./data``)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], *, ca_file: Path | None = None) -> None:
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.log = cwd / "serve.log"
        data_dir = Path(args[args.index("--data-dir") + 1]) if "--data-dir" in args else cwd / "data"
        self.ca_file = ca_file or data_dir / "tls" / "ca.pem"
        argv = [str(CONSOLE), "serve", *args, "--dicom-port", str(self.dicom_port), "--http-port", str(self.http_port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"https://127.0.0.1:{self.http_port}"
        deadline = time.monotonic() + 90  # by default one worker per CPU, each importing everything at once
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if self.http("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready: {self.log.read_text()}")

    def http(self, path: str, token: str | None = None, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return _http(self.url + path, token, data, headers, ca=self.ca_file)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A folder laid out as the repository after ``./scripts/test``: ``.venv`` beside the user's ``./data``."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


@pytest.fixture
def config_file(home: Path) -> Path:
    # The HL7 listener's default port is fixed (2575); tests share the machine, so it is moved to a free port.
    path = home / "gateway.toml"
    # The tests' clients stand for readers inside the hospital (login.trusted_networks): only administrators need a code.
    path.write_text(
        f'[hl7]\nport = {free_port()}\nhost = "127.0.0.1"\n[dicom]\nhost = "127.0.0.1"\n[http]\nhost = "127.0.0.1"\n'
        '[login]\ntrusted_networks = ["127.0.0.0/8"]\n'
    )
    return path


def test_the_synopsis_names_only_commands_tested_here() -> None:
    assert _synopsis_forms() == TESTED_FORMS


def test_first_administrator_steps_as_written(home: Path, config_file: Path) -> None:
    steps = [line.split("#")[0].strip() for line in _sh_block_after("create the first administrator") if line.strip()]
    assert steps == [".venv/bin/pacs-gateway user add admin --role admin", ".venv/bin/pacs-gateway user token admin"]
    env = _clean_env()
    code, output = _at_terminal(steps[0], cwd=home, env=env, answers=[PASSWORD, PASSWORD])
    assert code == 0, output
    assert "user admin (admin) created" in output and PASSWORD not in output  # prompts do not echo
    issued = subprocess.run(shlex.split(steps[1]), cwd=home, env=env, capture_output=True, text=True, timeout=60)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    assert (home / "data" / "index.sqlite").exists()  # the default data dir, ./data

    served = Served(["--config", str(config_file)], home, env)
    try:
        assert served.http("/dicom-web/studies")[0] == 401
        assert served.http("/dicom-web/studies", token)[0] in (200, 204)

        def log_in(**factor: str) -> tuple[int, Any]:
            body = json.dumps({"username": "admin", "password": PASSWORD, **factor}).encode()
            return served.http("/auth/login", data=body, headers={"Content-Type": "application/json"})

        # The first login: the password, then the key to add to an authenticator app, confirmed by its first code.
        status, body = log_in()
        assert status == 401 and body["second_factor"] == "enrol" and "token" not in body, body
        app = pyotp.parse_uri(body["enrolment"]["otpauth_uri"])
        status, body = log_in(code=app.now())
        assert status == 200 and body["token"] and len(body["recovery_codes"]) == 10, body
        assert served.http("/auth/me", body["token"])[1]["role"] == "admin"
        # From then on, the app's code beside the password (a phone a step ahead: one step of drift is allowed).
        assert log_in()[1]["second_factor"] == "totp"
        assert log_in(code=app.at(time.time() + app.interval))[0] == 200

        reset = _run("user", "reset-totp", "admin", cwd=home)
        assert reset.returncode == 0 and "second factor reset" in reset.stdout, reset.stderr
        assert log_in()[1]["second_factor"] == "enrol"  # a lost phone: the next login enrols afresh
    finally:
        assert served.stop() == 0


def test_a_short_password_is_refused_at_the_prompt(home: Path) -> None:
    code, output = _at_terminal(".venv/bin/pacs-gateway user add admin --role admin", cwd=home, env=_clean_env(), answers=["short", "short"])
    assert code == 1 and "password" in output and "created" not in output
    assert "Traceback" not in output


def test_two_passwords_that_differ_create_nothing(home: Path) -> None:
    code, output = _at_terminal(".venv/bin/pacs-gateway user add admin --role admin", cwd=home, env=_clean_env(), answers=[PASSWORD, PASSWORD + "x"])
    assert code == 1 and "differ" in output
    assert "no user 'admin'" in _run("user", "token", "admin", cwd=home).stderr


def _children(pid: int) -> list[str]:
    """The command lines of a process's children."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip() for kid in kids]


def test_serve_with_every_flag_answers_dicom_and_stops_cleanly(home: Path, config_file: Path) -> None:
    args = ["--config", str(config_file), "--ae-title", "README_AE", "--data-dir", str(home / "elsewhere"), "--workers", "2"]
    served = Served(args, home, _clean_env())
    try:
        children = _children(served.proc.pid)
        assert sorted(c.rsplit(" ", 1)[-1] for c in children) == ["hl7", "worker-0", "worker-1"], children
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", served.dicom_port, ae_title="README_AE")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
    finally:
        assert served.stop() == 0
    assert (home / "elsewhere" / "index.sqlite").exists() and not (home / "data").exists()
    assert not Path(f"/proc/{served.proc.pid}").exists()


def test_serve_with_one_worker_is_one_process(home: Path, config_file: Path) -> None:
    served = Served(["--config", str(config_file), "--workers", "1"], home, _clean_env())
    try:
        assert _children(served.proc.pid) == []
    finally:
        assert served.stop() == 0


def _studies(index_db: Path) -> list[dict[str, Any]]:
    from storage.index.database import IndexDatabase
    from storage.index.hierarchy import HierarchyQuery, Level

    index = IndexDatabase.open(f"sqlite:///{index_db}")
    try:
        return list(index.search_hierarchy(HierarchyQuery(Level.STUDY)))
    finally:
        index.close()


def test_import_with_config_and_data_dir(home: Path, config_file: Path) -> None:
    write_files(ct_series(3), home / "in" / "a")
    (home / "in" / "readme.txt").write_text("not DICOM")
    result = _run("import", "--config", config_file, "--data-dir", home / "d", "--no-progress", home / "in", cwd=home)
    assert result.returncode == 2, result.stderr  # one file rejected
    assert re.search(r"imported:\s+3", result.stdout) and re.search(r"rejected:\s+1", result.stdout)
    [study] = _studies(home / "d" / "index.sqlite")
    assert study["PatientID"] == "MRN-0001"


def _uids(folder: Path) -> set[str]:
    return {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in folder.rglob("*.dcm")}


def test_anonymise_without_a_secret_uses_a_fresh_key_each_run(home: Path) -> None:
    write_files(ct_series(2), home / "in")
    first = _run("anonymise", home / "in", home / "out1", "--no-progress", cwd=home)
    second = _run("anonymise", home / "in", home / "out2", "--no-progress", cwd=home)
    for result in (first, second):
        assert result.returncode == 0, result.stderr
        assert "mode:       anonymised" in result.stdout and "written:    2" in result.stdout
        assert "fresh random key" in result.stderr and "--secret-file" in result.stderr
    assert len(_uids(home / "out1")) == 2 and not _uids(home / "out1") & _uids(home / "out2")


def test_anonymise_with_a_secret_file_gives_stable_uids(home: Path) -> None:
    write_files(ct_series(2), home / "in")
    secret = home / "secret.txt"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o644)
    exposed = _run("anonymise", home / "in", home / "out0", "--secret-file", secret, cwd=home)
    assert exposed.returncode == 1 and "may be read or changed by other users" in exposed.stderr, exposed.stderr
    assert f"chmod 600 {secret}" in exposed.stderr and "Traceback" not in exposed.stderr and not (home / "out0").exists()
    secret.chmod(0o600)
    for out in ("out1", "out2"):
        result = _run("anonymise", home / "in", home / out, "--secret-file", secret, "--no-progress", cwd=home)
        assert result.returncode == 0 and "fresh random key" not in result.stderr, result.stderr
    assert _uids(home / "out1") == _uids(home / "out2") and len(_uids(home / "out1")) == 2
    short = home / "short.txt"
    short.write_text("too short\n")
    short.chmod(0o600)
    refused = _run("anonymise", home / "in", home / "out3", "--secret-file", short, cwd=home)
    assert refused.returncode == 1 and "at least 32 characters" in refused.stderr
    assert not (home / "out3").exists()


def test_anonymise_with_rules_destination_and_calling_ae(home: Path) -> None:
    write_files(ct_series(2), home / "in")
    rules = home / "rules.toml"
    rules.write_text('[[rule]]\ndestination = "research"\ncalling_ae = "CT*"\nmode = "anonymised"\n')
    args = ("anonymise", "--rules", rules, "--destination", "research", "--calling-ae", "CT01", "--no-progress", home / "in")
    result = _run(*args, home / "out", cwd=home)
    assert result.returncode == 0 and "written:    2" in result.stdout, result.stderr
    # Another calling AE falls to the defaults, which keep instances identified: nothing is written.
    other = _run("anonymise", "--rules", rules, "--destination", "research", "--calling-ae", "MR01", home / "in", home / "o2", cwd=home)
    assert other.returncode == 1 and "identified" in other.stderr and not (home / "o2").exists()
    # Pseudonymising needs the vault's secret: no fresh key is made up for it.
    rules.write_text('[defaults]\nmode = "pseudonymised"\n')
    refused = _run("anonymise", "--rules", rules, home / "in", home / "o3", cwd=home)
    assert refused.returncode == 1 and "needs a secret" in refused.stderr and not (home / "o3").exists()


def test_vault_find_and_reveal(home: Path, config_file: Path) -> None:
    rules = home / "rules.toml"
    rules.write_text('[defaults]\nmode = "pseudonymised"\n')
    env = _clean_env(PACSGW_DEID_SECRET=SECRET, PACSGW_DEID_RULES_FILE=str(rules))
    write_files(ct_series(1, patient=Patient(patient_id="MRN-VAULT")), home / "in")
    assert _run("import", "--no-progress", home / "in", cwd=home, env=env).returncode == 0
    found = _run("vault", "find", "MRN-VAULT", cwd=home, env=env)
    assert found.returncode == 0, found.stderr
    [pseudonym] = found.stdout.split()
    assert pseudonym.startswith("PGW")
    revealed = _run("vault", "reveal", pseudonym, "--kind", "patient", cwd=home, env=env)
    assert revealed.returncode == 0 and json.loads(revealed.stdout)["PatientID"] == "MRN-VAULT"
    [study] = _studies(home / "data" / "index.sqlite")
    study_uid = study["StudyInstanceUID"]
    revealed = _run("vault", "--data-dir", home / "data", "reveal", study_uid, "--kind", "study", cwd=home, env=env)
    assert revealed.returncode == 0, revealed.stderr
    assert json.loads(revealed.stdout)["StudyInstanceUID"] != study_uid
    unknown = _run("vault", "reveal", "PGWNOSUCH", cwd=home, env=env)
    assert unknown.returncode == 1 and "no patient with that pseudonym" in unknown.stderr


def test_quarantine_list_and_export(home: Path) -> None:
    rules = home / "rules.toml"
    rules.write_text('[defaults]\nmode = "pseudonymised"\n[[defaults.filter]]\naction = "quarantine"\nwhen = { Modality = "CT" }\n')
    env = _clean_env(PACSGW_DEID_SECRET=SECRET, PACSGW_DEID_RULES_FILE=str(rules))
    [source] = write_files(ct_series(1), home / "in")
    imported = _run("import", "--no-progress", home / "in", cwd=home, env=env)
    assert imported.returncode == 0 and re.search(r"quarantined:\s*1", imported.stdout), imported.stdout + imported.stderr
    listing = _run("quarantine", "list", cwd=home, env=env)
    assert listing.returncode == 0 and "IMPORT" in listing.stdout and "matches Modality=CT" in listing.stdout
    ident = listing.stdout.split()[0]
    exported = _run("quarantine", "export", ident, home / "review.dcm", "--data-dir", home / "data", cwd=home, env=env)
    assert exported.returncode == 0, exported.stderr
    assert dcmread(home / "review.dcm").SOPInstanceUID == dcmread(source).SOPInstanceUID


def test_user_subcommands_change_what_the_http_api_allows(home: Path, config_file: Path) -> None:
    mine, other = Patient(patient_id="MRN-MINE"), Patient(patient_id="MRN-OTHER", name="Trần^Thị Bình")
    write_files(ct_series(1, patient=mine) + ct_series(1, patient=other), home / "in")
    assert _run("import", "--no-progress", home / "in", cwd=home).returncode == 0
    studies = {s["PatientID"]: s["StudyInstanceUID"] for s in _studies(home / "data" / "index.sqlite")}

    added = _run("user", "add", "doctor", "--role", "referring", "--display-name", "BS. Lan", "--password-stdin", cwd=home, stdin=PASSWORD + "\n")
    assert added.returncode == 0 and "user doctor (referring) created" in added.stdout, added.stderr
    assert _run("user", "link", "doctor", "MRN-MINE", cwd=home).returncode == 0
    token = _run("user", "token", "doctor", "--hours", "2", cwd=home).stdout.strip()
    served = Served(["--config", str(config_file)], home, _clean_env())
    try:
        def visible(bearer: str) -> set[str]:
            status, body = served.http("/dicom-web/studies", bearer)
            assert status in (200, 204), body
            return {item["00100020"]["Value"][0] for item in body or []}

        assert visible(token) == {"MRN-MINE"}
        assert _run("user", "grant", "doctor", studies["MRN-OTHER"], "--data-dir", home / "data", cwd=home).returncode == 0
        assert visible(token) == {"MRN-MINE", "MRN-OTHER"}

        changed = _run("user", "password", "doctor", "--password-stdin", cwd=home, stdin=PASSWORD + " new\n")
        assert changed.returncode == 0 and "1 token(s) revoked" in changed.stdout, changed.stderr
        assert served.http("/dicom-web/studies", token)[0] == 401  # a reset shuts out whoever held a token
        token = _run("user", "token", "doctor", cwd=home).stdout.strip()

        def log_in(password: str) -> int:
            body = json.dumps({"username": "doctor", "password": password}).encode()
            return served.http("/auth/login", data=body, headers={"Content-Type": "application/json"})[0]

        assert log_in(PASSWORD + " new") == 200
        answers = [log_in("a wrong guess") for _ in range(6)]
        assert answers == [401] * 5 + [429], answers  # locked after five
        assert log_in(PASSWORD + " new") == 429
        unlocked = _run("user", "unlock", "doctor", cwd=home)
        assert unlocked.returncode == 0 and "unlocked" in unlocked.stdout, unlocked.stderr
        assert log_in(PASSWORD + " new") == 200

        revoked = _run("user", "revoke", "doctor", cwd=home)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        deadline = time.monotonic() + 10  # revocation must take hold; polled, not slept
        while served.http("/dicom-web/studies", token)[0] != 401:
            assert time.monotonic() < deadline, "a revoked token still works"
            time.sleep(0.1)
    finally:
        assert served.stop() == 0
    assert _run("user", "token", "nobody", cwd=home).returncode == 1


def test_user_audit_digest(home: Path) -> None:
    env = _clean_env(PACSGW_DEID_SECRET=SECRET)
    first = _run("user", "audit-digest", "MRN-0001", cwd=home, env=env)
    assert first.returncode == 0 and first.stdout.startswith("hmac:"), first.stderr
    assert _run("user", "audit-digest", "MRN-0001", cwd=home, env=env).stdout == first.stdout
    assert _run("user", "audit-digest", "MRN-0002", cwd=home, env=env).stdout != first.stdout
    exposed = home / "secret.txt"
    exposed.write_text(SECRET + "\n")
    exposed.chmod(0o640)
    refused = _run("user", "audit-digest", "MRN-0001", cwd=home, env=_clean_env(PACSGW_DEID_SECRET_FILE=str(exposed)))
    assert refused.returncode == 1 and "may be read or changed by other users (mode 0640)" in refused.stderr
    assert "Traceback" not in refused.stderr and not refused.stdout


def test_config_prints_settings_with_secrets_masked(home: Path, config_file: Path) -> None:
    env = _clean_env(PACSGW_DEID_SECRET=SECRET, PACSGW_S3_SECRET_KEY="s3-secret-value")
    shown = _run("config", "--config", config_file, "--data-dir", home / "x", cwd=home, env=env)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    assert settings["data_dir"] == str(home / "x") and settings["hl7"]["host"] == "127.0.0.1"
    assert SECRET not in shown.stdout and "s3-secret-value" not in shown.stdout
    reference = _run("config", "--reference", cwd=home)
    assert reference.returncode == 0 and reference.stdout in README
    broken = home / "broken.toml"
    broken.write_text("[dicom]\nport = 'eleven'\n")
    refused = _run("config", "--config", broken, cwd=home)
    assert refused.returncode == 1 and "configuration error" in refused.stderr and "Traceback" not in refused.stderr


def test_tls_self_signed_writes_a_trial_set_the_gateway_serves(home: Path, config_file: Path) -> None:
    made = _run("tls", "self-signed", "certs", "--host", "localhost", "--host", "127.0.0.1", cwd=home)
    assert made.returncode == 0, made.stderr
    certs = home / "certs"
    assert sorted(p.name for p in certs.iterdir()) == ["ca.pem", "server.key", "server.pem"]  # no CA key kept
    assert (certs / "server.key").stat().st_mode & 0o077 == 0
    assert f'tls_cert_file = "{certs / "server.pem"}"' in made.stdout and "curl --cacert certs/ca.pem" in made.stdout
    again = _run("tls", "self-signed", "certs", cwd=home)
    assert again.returncode == 1 and "exists; not overwritten" in again.stderr and "Traceback" not in again.stderr

    # The settings it printed, added to the settings file: the gateway serves that certificate.
    printed = made.stdout.split("in the settings file:\n", 1)[1].split("\nand trust", 1)[0]
    config_file.write_text(config_file.read_text().replace("[http]\n", printed.replace("  ", "") + "\n", 1))
    served = Served(["--config", str(config_file)], home, _clean_env(), ca_file=certs / "ca.pem")
    try:
        assert served.http("/health")[0] == 200
        assert not (home / "data" / "tls").exists()  # no trial set made: a certificate is configured
    finally:
        assert served.stop() == 0


def test_python_dash_m_gateway_is_the_same_command(home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "config", "--reference"], cwd=home, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == _run("config", "--reference", cwd=home).stdout


@pytest.mark.parametrize("command", sorted({f.split()[0] for f in TESTED_FORMS if not f.startswith("python")}))
def test_every_command_has_help(command: str, home: Path) -> None:
    result = _run(command, "--help", cwd=home)
    assert result.returncode == 0 and f"pacs-gateway {command}" in result.stdout, result.stderr


def _subcommands() -> Iterator[tuple[str, str]]:
    for form in sorted(TESTED_FORMS):
        words = form.split()
        if len(words) == 2 and words[0] not in ("python", "tls"):  # tls self-signed reads no settings
            yield words[0], words[1]


@pytest.mark.parametrize(("command", "subcommand"), list(_subcommands()))
def test_data_dir_is_taken_after_the_subcommand(command: str, subcommand: str, home: Path) -> None:
    result = _run(command, subcommand, "--help", cwd=home)
    assert result.returncode == 0 and "--data-dir" in result.stdout and "--config" in result.stdout


def test_tls_self_signed_reads_no_settings(home: Path) -> None:
    made = _run("tls", "self-signed", "certs", cwd=home, env=_clean_env(PACSGW_HTTP_PORT="eleven"))
    assert made.returncode == 0 and (home / "certs" / "server.pem").exists(), made.stderr  # a bad setting does not matter
    assert "--data-dir" not in _run("tls", "self-signed", "--help", cwd=home).stdout


def test_scripts_run_sets_up_and_serves(tmp_path: Path) -> None:
    """``./scripts/run`` (the README's first command), with the ports and data dir moved off the shared defaults."""
    http_port, dicom_port = free_port(), free_port()
    env = _clean_env(PACSGW_HL7_PORT=str(free_port()), PACSGW_HL7_HOST="127.0.0.1", PACSGW_HTTP_HOST="127.0.0.1", PACSGW_DICOM_HOST="127.0.0.1")
    argv = ["./scripts/run", "--dicom-port", str(dicom_port), "--http-port", str(http_port), "--data-dir", str(tmp_path / "data")]
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # it installs the package first
        while True:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            try:
                if _http(f"https://127.0.0.1:{http_port}/health", ca=tmp_path / "data" / "tls" / "ca.pem")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        assert (tmp_path / "data" / "index.sqlite").exists()
        log = (tmp_path / "run.log").read_text()
        assert "TRIAL certificate" in log and f"curl --cacert {tmp_path / 'data' / 'tls' / 'ca.pem'}" in log
        # The README's check after it, from beside that data dir, as typed (the port moved).
        [check] = [line for line in _sh_block_after("says so in the log; trust that CA") if line.strip()]
        assert check == "curl --cacert data/tls/ca.pem https://localhost:8042/health"
        shown = subprocess.run(
            ["/bin/sh", "-c", check.replace("8042", str(http_port))], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
        )  # fmt: skip
        assert shown.returncode == 0 and json.loads(shown.stdout)["live"] is True, shown.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            assert proc.wait(20) == 0
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise


def _store_over_dicom(port: int, datasets: list[Any]) -> list[int]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSGW")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_spool_drain_files_a_dead_nodes_spool_while_this_gateway_serves(home: Path, config_file: Path) -> None:
    series = ct_series(5)
    uids = [str(ds.SOPInstanceUID) for ds in series]
    # Node A: its object store never answers, so what it acknowledges waits in its spool; then it is SIGKILLed.
    dead = home / "node-a.toml"
    dead.write_text(
        config_file.read_text()
        + f'[storage]\nbackend = "s3"\n[s3]\nendpoint = "127.0.0.1:{free_port()}"\nsecure = false\nconnect_timeout = 0.5\n'
    )
    dicom_port = free_port()
    argv = [str(CONSOLE), "serve", "--config", str(dead), "--data-dir", str(home / "a"), "--dicom-port", str(dicom_port),
            "--http-port", str(free_port())]  # fmt: skip
    with open(home / "node-a.log", "ab") as log:
        node_a = subprocess.Popen(argv, cwd=home, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # its /health says 503 (no object store): wait for DICOM instead
            assert node_a.poll() is None and time.monotonic() < deadline, (home / "node-a.log").read_text()
            try:
                statuses = _store_over_dicom(dicom_port, series)
                break
            except AssertionError:
                time.sleep(0.1)
        assert statuses == [0] * 5
    finally:
        os.killpg(node_a.pid, signal.SIGKILL)
        node_a.wait(10)
    spool = home / "a" / "spool"
    # One association: one worker's spool holds the five (the node runs one worker per CPU, each with its spool).
    [segment] = [p for p in spool.rglob("seg-*.log") if p.stat().st_size]
    raw = bytearray(segment.read_bytes())
    damaged_at = raw.rindex(uids[2].encode())  # inside the third instance's record: it fails its checksum
    raw[damaged_at] ^= 0xFF
    segment.write_bytes(bytes(raw))

    # This gateway serves, and already holds the first instance.
    added = _run("user", "add", "ops", "--role", "admin", "--password-stdin", cwd=home, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    token = _run("user", "token", "ops", cwd=home).stdout.strip()
    served = Served(["--config", str(config_file)], home, _clean_env())
    try:
        assert _store_over_dicom(served.dicom_port, series[:1]) == [0]
        study = str(series[0].StudyInstanceUID)
        deadline = time.monotonic() + 30
        while served.http(f"/dicom-web/studies/{study}/instances", token)[0] != 200:  # filed by its worker
            assert time.monotonic() < deadline
            time.sleep(0.1)
        refused = _run("spool", "drain", home / "data" / "spool", "--data-dir", home / "other", cwd=home)
        assert refused.returncode == 1 and "in use by a running process" in refused.stderr, refused.stderr

        drained = _run("spool", "drain", spool, "--config", config_file, cwd=home)
        assert drained.returncode == 2, drained.stdout + drained.stderr  # one record could not be filed
        assert re.search(r"filed:\s+3\b", drained.stdout), drained.stdout
        assert re.search(r"duplicates:\s+1\b", drained.stdout) and re.search(r"set aside:\s+1\b", drained.stdout)
        assert len(list((segment.parent / "quarantine").glob("*.damaged.bin"))) == 1
        again = _run("spool", "drain", spool, cwd=home)  # the checkpoint moved past everything
        assert again.returncode == 0 and re.search(r"filed:\s+0\b", again.stdout), again.stdout + again.stderr

        status, body = served.http(f"/dicom-web/studies/{study}/instances", token)
        assert status == 200, body
        answered = [item["00080018"]["Value"][0] for item in body]
        assert sorted(answered) == sorted(uids[:2] + uids[3:])  # each exactly once; the damaged one is not there
    finally:
        assert served.stop() == 0
    from storage.object_store.local import LocalObjectStore

    assert len(LocalObjectStore(home / "data" / "objects").list_keys("studies/")) == 4
