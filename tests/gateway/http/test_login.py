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
    for name in ("dr.lock", "dr.free", "dr.timing", "dr.crowd"):
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


def test_five_failures_lock_the_account_name_even_for_the_right_password(gateway) -> None:
    for _ in range(5):
        assert login(gateway, "dr.lock", "a wrong guess", "127.0.0.11")[0] == 401
    for source in ("127.0.0.11", "127.0.0.12"):  # from anywhere
        status, body, headers = login(gateway, "dr.lock", PASSWORD, source)
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60, (status, body)
        assert body == {"error": f"too many failed logins: try again in {headers['Retry-After']} s"}
    assert login(gateway, "dr.free", PASSWORD, "127.0.0.11")[0] == 200  # other accounts are not held up
    # An unknown name is locked the same way: the answers tell nothing about which accounts exist.
    answers = [login(gateway, "dr.nobody", "a wrong guess", "127.0.0.13")[:2] for _ in range(6)]
    assert answers[:5] == [(401, {"error": "unknown user or wrong password"})] * 5 and answers[5][0] == 429
    events = gateway.audit_events(
        lambda events: [e["outcome"] for e in events if e["username"] == "dr.lock" and e["action"] == "login"].count(429) == 2,
        "user=dr.lock",
    )
    outcomes = [(e["action"], e["outcome"]) for e in reversed(events)]
    assert outcomes == [("login", 401)] * 4 + [("login", 401), ("login-lockout", 429), ("login", 429), ("login", 429)]
    assert "locked for 60 s" in gateway.log_tail(400) and "dr.lock" not in gateway.log_tail(400)
    _, metrics = gateway.get("/metrics")
    assert 'pacsgw_login_lockouts_total{scope="account"} 2.0' in metrics


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
