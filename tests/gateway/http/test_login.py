"""Logins over HTTP: failed ones throttled per account name and per address, across the gateway's answers;
every answer but a success taking as long whatever the user name."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.storage.test_accounts import interleaved_medians

PASSWORD = "the right password"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    from tests.gateway_process import GatewayProcess

    gw = GatewayProcess(tmp_path_factory.mktemp("login") / "gw", {})
    gw.start()
    for name in ("dr.lock", "dr.free", "dr.timing", "dr.crowd", "dr.rush", "dr.unlock"):
        gw.add_user(name, "radiologist", password=PASSWORD)
    yield gw
    gw.kill()


def login(gateway, username: str, password: str, source: str = "127.0.0.1") -> tuple[int, dict, dict[str, str]]:
    """POST /auth/login from a given loopback address (each test its own, so that addresses' counts stay apart)."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.http_port, timeout=10, source_address=(source, 0))
    try:
        body = json.dumps({"username": username, "password": password})
        connection.request("POST", "/auth/login", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


def test_five_failures_lock_a_name_from_that_address_even_for_the_right_password(gateway) -> None:
    for _ in range(5):
        assert login(gateway, "dr.lock", "a wrong guess", "127.0.0.11")[0] == 401
    for _ in range(2):
        status, body, headers = login(gateway, "dr.lock", PASSWORD, "127.0.0.11")
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60, (status, body)
        assert body == {"error": f"too many failed logins: try again in {headers['Retry-After']} s"}
    # From another address the name is still heard: guessing it cannot shut its owner out.
    assert login(gateway, "dr.lock", PASSWORD, "127.0.0.12")[0] == 200
    assert login(gateway, "dr.free", PASSWORD, "127.0.0.11")[0] == 200  # other accounts are not held up
    # An unknown name is locked the same way: the answers tell nothing about which accounts exist.
    answers = [login(gateway, "dr.nobody", "a wrong guess", "127.0.0.13")[:2] for _ in range(6)]
    assert answers[:5] == [(401, {"error": "unknown user or wrong password"})] * 5 and answers[5][0] == 429
    events = gateway.audit_events(
        lambda events: [e["outcome"] for e in events if e["action"] == "login"].count(200) == 1, "user=dr.lock"
    )
    outcomes = [(e["action"], e["outcome"]) for e in reversed(events)]
    assert outcomes == [("login", 401)] * 5 + [("login-lockout", 429), ("login", 429), ("login", 429), ("login", 200)]
    assert "locked for 60 s" in gateway.log_tail(400) and "dr.lock" not in gateway.log_tail(400)
    # A name no account has is in the trail as a digest: a password typed into the name field is not kept.
    trail = gateway.audit_events(lambda events: sum(e["action"] == "login" for e in events) >= 15)
    assert not [e for e in trail if e["username"] == "dr.nobody"]
    assert [e for e in trail if e["username"].startswith("hmac:") and e["action"] == "login"]
    _, metrics = gateway.get("/metrics")
    assert 'pacsgw_login_lockouts_total{scope="pair"} 2.0' in metrics


def test_wrong_passwords_sent_at_once_are_all_counted(gateway) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: login(gateway, "dr.rush", "a wrong guess", "127.0.0.41")[0], range(16)))
    assert statuses.count(401) <= 5 and statuses.count(429) >= 11, statuses  # at most five passwords checked


def test_unlock_lifts_a_lockout_and_logout_ends_a_token(gateway) -> None:
    import subprocess
    import sys
    from pathlib import Path

    for _ in range(6):
        login(gateway, "dr.unlock", "a wrong guess", "127.0.0.51")
    assert login(gateway, "dr.unlock", PASSWORD, "127.0.0.51")[0] == 429
    env = gateway._environment()
    unlocked = subprocess.run(
        [str(Path(sys.executable).with_name("pacs-gateway")), "user", "unlock", "dr.unlock"], env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unlocked.returncode == 0 and "unlocked" in unlocked.stdout, unlocked.stderr
    status, body, _ = login(gateway, "dr.unlock", PASSWORD, "127.0.0.51")
    assert status == 200
    token = body["token"]
    assert gateway.get("/auth/me", {"Authorization": f"Bearer {token}"}, auth=False)[0] == 200
    assert gateway.send("POST", "/auth/logout", headers={"Authorization": f"Bearer {token}"}, auth=False)[0] == 204
    assert gateway.get("/auth/me", {"Authorization": f"Bearer {token}"}, auth=False)[0] == 401  # at once


def test_many_failures_from_one_address_lock_that_address(gateway) -> None:
    for n in range(20):  # one guess each at twenty names: no account name is locked
        assert login(gateway, f"guess-{n}", "a wrong guess", "127.0.0.21")[0] == 401
    assert login(gateway, "dr.crowd", PASSWORD, "127.0.0.21")[0] == 429
    status, body, _ = login(gateway, "dr.crowd", PASSWORD, "127.0.0.22")
    assert status == 200 and body["token"]


def test_a_wrong_user_name_takes_as_long_as_a_wrong_password(gateway) -> None:
    names = iter(f"dr.unknown-{n}" for n in range(100))
    known, unknown = interleaved_medians(
        lambda: login(gateway, "dr.timing", "a wrong guess", "127.0.0.31"),
        lambda: login(gateway, next(names), "a wrong guess", "127.0.0.32"),
        tries=4,  # under the account's limit
    )
    assert unknown / known > 0.5, (known, unknown)
