"""Two-factor logins over HTTP against a gateway process: administrators enrol at their first login and then need a
code; others need one only from outside ``login.trusted_networks``. The client's address is what the gateway takes
it to be: a balancer at 127.0.0.1 (``network.trusted_proxies``) names it in X-Forwarded-For."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from typing import Any

import pyotp
import pytest

PASSWORD = "a long enough password 1"
PROXY = "127.0.0.1"
NOT_A_PROXY = "127.0.0.2"
INSIDE = "10.1.20.30"
SECRET = "login-totp-secret-0123456789abcdefghijkl"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    env = {"PACSGW_NETWORK_TRUSTED_PROXIES": PROXY, "PACSGW_LOGIN_TRUSTED_NETWORKS": "10.1.0.0/16", "PACSGW_DEID_SECRET": SECRET}
    gw = GatewayProcess(tmp_path_factory.mktemp("login-totp") / "gw", env)
    gw.start()
    yield gw
    gw.kill()


_outside = iter(range(1, 250))


def outside() -> str:
    """A fresh address outside the hospital for each journey, so that the per-address throttle of one stays apart."""
    return f"203.0.113.{next(_outside)}"


def login(gateway, username: str, forwarded: str | None, source: str = PROXY, **factor: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10, source_address=(source, 0))
    headers = {"Content-Type": "application/json", **({"X-Forwarded-For": forwarded} if forwarded else {})}
    try:
        connection.request("POST", "/auth/login", json.dumps({"username": username, "password": PASSWORD, **factor}), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def enrol(gateway, username: str, where: str) -> tuple[pyotp.TOTP, list[str]]:
    """The first login of an account needing a second factor: shown the key, confirmed by its first code."""
    status, answer = login(gateway, username, where)
    assert status == 401 and answer["second_factor"] == "enrol" and "token" not in answer, answer
    enrolment = answer["enrolment"]
    assert enrolment["qr_svg"].lstrip().startswith(("<?xml", "<svg")) and enrolment["account"] == username
    totp = pyotp.parse_uri(enrolment["otpauth_uri"])
    assert totp.secret == enrolment["secret"] and totp.issuer == "PACS gateway"
    status, answer = login(gateway, username, where, code=totp.now())
    assert status == 200 and answer["token"] and len(answer["recovery_codes"]) == 10, answer
    return totp, answer["recovery_codes"]


def ahead(totp: pyotp.TOTP, steps: int = 1) -> str:
    """The code of a phone whose clock is ``steps`` steps ahead (the drift allowed is one)."""
    return totp.at(time.time() + steps * totp.interval)


def test_an_administrator_enrols_at_the_first_login_then_logs_in_with_a_code(gateway) -> None:
    gateway.add_user("root.admin", "admin", password=PASSWORD)
    where = INSIDE  # an administrator needs the code inside the hospital too
    totp, _codes = enrol(gateway, "root.admin", where)
    status, answer = login(gateway, "root.admin", where)
    assert (status, answer["second_factor"]) == (401, "totp") and "enrolment" not in answer, answer
    status, answer = login(gateway, "root.admin", where, code=ahead(totp))
    assert status == 200 and answer["role"] == "admin" and "recovery_codes" not in answer, answer
    assert gateway.get("/auth/me", {"Authorization": f"Bearer {answer['token']}"}, auth=False)[0] == 200

    def logins(rows: list[dict]) -> list[int]:
        return [r["outcome"] for r in reversed(rows) if r["username"] == "root.admin" and r["action"] == "login"]

    events = gateway.audit_events(lambda rows: len(logins(rows)) == 4)
    assert logins(events) == [401, 200, 401, 200]  # shown the key, confirmed, asked for a code, logged in
    steps = [r["action"] for r in reversed(events) if r["username"] == "root.admin" and r["action"] != "login"]
    assert steps[:2] == ["totp-enrolled", "totp-confirmed"], steps
    assert {r["source"] for r in events if r["username"] == "root.admin"} == {where}


def test_a_wrong_code_a_replayed_code_and_a_spent_recovery_code_are_refused(gateway) -> None:
    gateway.add_user("second.admin", "admin", password=PASSWORD)
    where = outside()
    totp, codes = enrol(gateway, "second.admin", where)
    right = ahead(totp)
    wrong = next(c for c in ("000000", "111111", "222222") if c not in {totp.now(), right, ahead(totp, -1)})
    status, answer = login(gateway, "second.admin", where, code=wrong)
    assert (status, answer["error"]) == (401, "wrong code"), answer
    assert login(gateway, "second.admin", where, code=right)[0] == 200
    status, answer = login(gateway, "second.admin", where, code=right)  # the same code again: a replay
    assert status == 401 and "used already" in answer["error"], answer
    status, answer = login(gateway, "second.admin", where, recovery_code=codes[0])
    assert status == 200 and answer["recovery_codes_left"] == 9, answer
    status, answer = login(gateway, "second.admin", where, recovery_code=codes[0])
    assert status == 401 and answer["second_factor"] == "totp", answer
    events = gateway.audit_events(
        lambda rows: {"recovery-code-used", "recovery-code-failed"} <= {r["action"] for r in rows if r["username"] == "second.admin"}
    )
    failed = [r["target"] for r in events if r["username"] == "second.admin" and r["action"] == "totp-failed"]
    assert sorted(failed) == ["/auth/login replayed", "/auth/login wrong-code"], failed
    assert not any(c in json.dumps(events) for c in codes) and right not in json.dumps(events)


def test_code_guesses_are_throttled_with_the_password_right(gateway) -> None:
    gateway.add_user("guessed.admin", "admin", password=PASSWORD)
    where = outside()
    totp, _codes = enrol(gateway, "guessed.admin", where)
    taken = {totp.now(), ahead(totp), ahead(totp, -1), ahead(totp, 2)}
    guesses = [g for g in (f"{n:06d}" for n in range(100000, 100020)) if g not in taken][:5]
    assert [login(gateway, "guessed.admin", where, code=g)[0] for g in guesses] == [401] * 5
    status, answer = login(gateway, "guessed.admin", where, code=ahead(totp))
    assert status == 429 and "too many failed logins" in answer["error"], answer  # the right code included


def test_a_radiologist_needs_a_code_only_from_outside(gateway) -> None:
    gateway.add_user("dr.thu", "radiologist", password=PASSWORD)
    status, answer = login(gateway, "dr.thu", INSIDE)
    assert status == 200 and answer["token"] and "recovery_codes" not in answer, answer
    # A peer that is not a trusted proxy naming an inside address is not believed: it is outside itself.
    status, answer = login(gateway, "dr.thu", INSIDE, source=NOT_A_PROXY)
    assert (status, answer.get("second_factor")) == (401, "enrol"), answer
    where = outside()
    totp, _codes = enrol(gateway, "dr.thu", where)
    assert login(gateway, "dr.thu", where)[0] == 401
    assert login(gateway, "dr.thu", where, code=ahead(totp))[0] == 200
    assert login(gateway, "dr.thu", INSIDE)[0] == 200  # enrolled, still no code asked inside


def test_an_administrator_resets_a_lost_second_factor_from_the_command_line(gateway) -> None:
    gateway.add_user("dr.lost", "radiologist", password=PASSWORD)
    where = outside()
    old, codes = enrol(gateway, "dr.lost", where)
    reset = subprocess.run(
        [sys.executable, "-m", "gateway", "user", "reset-totp", "dr.lost"], env=gateway._environment(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert reset.returncode == 0 and "second factor reset" in reset.stdout, reset.stderr
    assert login(gateway, "dr.lost", where, code=ahead(old))[1].get("second_factor") == "enrol"  # the old phone is no use
    assert login(gateway, "dr.lost", where, recovery_code=codes[1])[1].get("second_factor") == "enrol"
    new, _codes = enrol(gateway, "dr.lost", where)
    assert new.secret != old.secret
    events = gateway.audit_events(lambda rows: any(r["action"] == "totp-reset" for r in rows))
    [event] = [r for r in events if r["action"] == "totp-reset"]
    assert (event["username"], event["outcome"], event["source"]) == ("dr.lost", 200, "cli")
    again = subprocess.run([sys.executable, "-m", "gateway", "user", "reset-totp", "nobody"], env=gateway._environment(),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 1 and "no user 'nobody'" in again.stderr
