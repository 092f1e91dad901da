"""The identity provider's JWTs as bearer tokens, against real provider processes and a real gateway process.

The RS256/ES256, rotation and refusal cases use tests/peers/jwt_issuer.py (oidc-provider-mock signs RS256 ID tokens
with one fixed key only, and its access tokens are opaque); one test takes oidc-provider-mock's own ID token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files
from tests.peers.oidc import JwtIssuer, run_jwt_issuer, run_provider_mock

AUDIENCE = "pacs-gateway"
ROLE_MAP = "pacs-admin=admin,pacs-reader=radiologist,pacs-referring=referring,pacs-audit=auditor"


def _env(issuer: str, **more: str) -> dict[str, str]:
    return {"PACSGW_OIDC_ISSUER": issuer, "PACSGW_OIDC_AUDIENCE": AUDIENCE, "PACSGW_OIDC_ROLE_MAP": ROLE_MAP,
            "PACSGW_OIDC_JWKS_MIN_REFETCH_SECONDS": "1", **more}  # fmt: skip


def _claims(issuer: str, **more: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer, "aud": AUDIENCE, "sub": "f1d2-0001", "iat": now, "nbf": now, "exp": now + 300,
              "preferred_username": "dr.sso", "name": "Trần Văn Sơn", "realm_access": {"roles": ["pacs-reader"]}}  # fmt: skip
    claims.update(more)
    return {k: v for k, v in claims.items() if v is not None}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, JwtIssuer, list]]:
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("oidc")
    with run_jwt_issuer(tmp) as issuer:
        gw = GatewayProcess(tmp / "gw", _env(issuer.base_url))
        gw.start()
        linked = ct_series(1, size=16, accession="SSO-LINKED", patient=Patient(patient_id="MRN-SSO-1", name="Phạm^Thị Hà", citizen_id="001000000311"))
        other = ct_series(1, size=16, accession="SSO-OTHER", patient=Patient(patient_id="MRN-SSO-2", name="Đỗ^Văn Nam", citizen_id="001000000312"))
        assert storescu(gw.dicom_port, write_files(linked + other, tmp / "files")).returncode == 0
        gw.wait_idle()
        try:
            yield gw, issuer, [linked[0], other[0]]
        finally:
            gw.kill()


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_providers_token_reads_dicomweb_and_its_sign_in_is_audited(sso, alg: str) -> None:
    gw, issuer, studies = sso
    token = issuer.mint(_claims(issuer.base_url, sub=f"sub-{alg}", preferred_username=f"dr.{alg.lower()}"), alg)
    status, found = gw.get("/dicom-web/studies", _bearer(token), auth=False)
    assert status == 200 and len(found) == 2
    status, me = gw.get("/auth/me", _bearer(token), auth=False)
    assert status == 200 and me == {"username": f"dr.{alg.lower()}", "role": "radiologist", "display_name": "Trần Văn Sơn"}
    name = f"dr.{alg.lower()}"
    events = gw.audit_events(lambda es: {"sso-login", "query"} <= {e["action"] for e in es if e["username"] == name})
    sign_ins = [e for e in events if e["action"] == "sso-login" and e["username"] == name]
    assert len(sign_ins) == 1 and sign_ins[0]["outcome"] == 200 and sign_ins[0]["role"] == "radiologist"


def _bad_tokens(issuer: JwtIssuer) -> dict[str, tuple[str, str]]:
    """Each refused token and the words its 401 must give."""
    base, now = issuer.base_url, int(time.time())
    good = issuer.mint(_claims(base))
    head, payload, signature = good.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    return {
        "wrong issuer": (issuer.mint(_claims("http://127.0.0.1:1/other-realm")), "another issuer"),
        "wrong audience": (issuer.mint(_claims(base, aud="some-other-app")), "another audience"),
        "expired": (issuer.mint(_claims(base, iat=now - 900, nbf=now - 900, exp=now - 120)), "expired"),
        "not yet valid": (issuer.mint(_claims(base, nbf=now + 120)), "not valid yet"),
        "HS256 with the public key": (issuer.mint(_claims(base), "HS256"), "only RS256 and ES256"),
        "alg none": (issuer.mint(_claims(base), "none"), "only RS256 and ES256"),
        "tampered signature": (f"{head}.{payload}.{flipped}", "signature"),
        "a key never published": (issuer.mint(_claims(base), key="unpublished"), "does not publish"),
        "no exp": (issuer.mint(_claims(base, exp=None)), "no exp claim"),
        "a Keycloak ID token": (issuer.mint(_claims(base, typ="ID")), "not an access token"),
        "an ID token (its sign-in's nonce)": (issuer.mint(_claims(base, nonce="n-1")), "not an access token"),
    }


def test_bad_tokens_get_401_with_the_reason_and_are_audited(sso) -> None:
    gw, issuer, _ = sso
    for case, (token, words) in _bad_tokens(issuer).items():
        status, body = gw.get("/dicom-web/studies", _bearer(token), auth=False)
        assert status == 401 and words in body["error"], (case, status, body)
    events = gw.audit_events(lambda es: sum(e["action"] == "sso-login" and e["outcome"] == 401 for e in es) >= 10)
    assert all(e["username"] == "" for e in events if e["action"] == "sso-login" and e["outcome"] == 401)


def test_clock_skew_within_the_leeway_is_allowed(sso) -> None:
    gw, issuer, _ = sso
    now = int(time.time())
    skewed = issuer.mint(_claims(issuer.base_url, sub="skew", nbf=now + 10, exp=now - 10 + 300, iat=now + 10))
    just_expired = issuer.mint(_claims(issuer.base_url, sub="skew", iat=now - 600, nbf=now - 600, exp=now - 10))
    assert gw.get("/auth/me", _bearer(skewed), auth=False)[0] == 200
    assert gw.get("/auth/me", _bearer(just_expired), auth=False)[0] == 200  # 10 s past exp, leeway 30 s


def test_roles_and_linked_patients_come_from_the_claims(sso) -> None:
    gw, issuer, (linked, other) = sso
    base = issuer.base_url
    unmapped = issuer.mint(_claims(base, sub="nobody", realm_access={"roles": ["offline_access", "uma_authorization"]}))
    status, body = gw.get("/dicom-web/studies", _bearer(unmapped), auth=False)
    assert status == 403 and "role_map" in body["error"]

    referring = _claims(base, sub="ref-1", preferred_username="bs.hoa", realm_access={"roles": ["pacs-referring"]},
                        patients=["MRN-SSO-1"])  # fmt: skip
    status, found = gw.get("/dicom-web/studies", _bearer(issuer.mint(referring)), auth=False)
    assert status == 200 and [s["0020000D"]["Value"][0] for s in found] == [linked.StudyInstanceUID]
    study = f"/dicom-web/studies/{other.StudyInstanceUID}/metadata"
    assert gw.get(study, _bearer(issuer.mint(referring)), auth=False)[0] in (403, 404)

    # The provider gives the same person more: the next token's claims take effect, on the same account.
    promoted = {**referring, "realm_access": {"roles": ["pacs-referring", "pacs-reader"]}}
    status, found = gw.get("/dicom-web/studies", _bearer(issuer.mint(promoted)), auth=False)
    assert status == 200 and len(found) == 2
    status, me = gw.get("/auth/me", _bearer(issuer.mint(promoted)), auth=False)
    assert me["role"] == "radiologist" and me["username"] == "bs.hoa"

    index = gw.open_index()
    try:
        with index.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT u.username, u.role, u.password_hash, s.issuer FROM sso_identities s JOIN users u ON u.pk = s.user_pk "
                "WHERE s.subject = 'ref-1'"
            ).all()
    finally:
        index.close()
    assert rows == [("bs.hoa", "radiologist", "", base)]


def test_an_sso_user_never_takes_a_local_accounts_name(sso) -> None:
    gw, issuer, _ = sso
    local_token = gw.add_user("bs.local", "auditor")
    token = issuer.mint(_claims(issuer.base_url, sub="other-person", preferred_username="bs.local"))
    status, me = gw.get("/auth/me", _bearer(token), auth=False)
    assert status == 200 and me["username"].startswith("bs.local~") and me["role"] == "radiologist"
    assert gw.get("/auth/me", _bearer(local_token), auth=False)[1]["role"] == "auditor"


def test_an_sso_account_disabled_at_the_gateway_is_shut_out(sso) -> None:
    gw, issuer, _ = sso
    first = _claims(issuer.base_url, sub="to-disable", preferred_username="dr.off")
    assert gw.get("/auth/me", _bearer(issuer.mint(first)), auth=False)[0] == 200
    index = gw.open_index()
    try:
        with index.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE users SET disabled = 1 WHERE username = 'dr.off'")
    finally:
        index.close()
    renamed = {**first, "name": "Another name"}  # new claims: the account is looked at again at once
    status, body = gw.get("/auth/me", _bearer(issuer.mint(renamed)), auth=False)
    assert status == 401 and "disabled" in body["error"]


def test_key_rotation_is_followed_and_unknown_keys_cannot_hammer_the_provider(sso) -> None:
    gw, issuer, _ = sso
    base = issuer.base_url
    before = issuer.mint(_claims(base, sub="rot"), "ES256")
    assert gw.get("/auth/me", _bearer(before), auth=False)[0] == 200
    issuer.rotate()
    after = issuer.mint(_claims(base, sub="rot"), "ES256")
    deadline = time.monotonic() + 10  # one refetch a second at most (jwks_min_refetch_seconds = 1)
    while (status := gw.get("/auth/me", _bearer(after), auth=False)[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200
    retired = issuer.mint(_claims(base, sub="rot"), "ES256", key="retired")
    assert gw.get("/auth/me", _bearer(retired), auth=False)[0] == 401  # dropped by the provider: dropped here

    fetches, started = issuer.jwks_fetches(), time.monotonic()
    forged = [issuer.mint(_claims(base, sub=f"forged-{n}"), key="unpublished") for n in range(40)]
    for token in forged:
        assert gw.get("/auth/me", _bearer(token), auth=False)[0] == 401
    elapsed = time.monotonic() - started
    assert issuer.jwks_fetches() - fetches <= int(elapsed) + 1, (issuer.jwks_fetches() - fetches, elapsed)


def test_provider_unreachable_cached_keys_keep_working_others_get_401(tmp_path: Path, start_gateway) -> None:
    with run_jwt_issuer(tmp_path) as issuer:
        # Keys stale at once: every request would fetch them again, were it not for the refetch limit.
        gw = start_gateway(_env(issuer.base_url, PACSGW_OIDC_JWKS_CACHE_SECONDS="0"))
        known = issuer.mint(_claims(issuer.base_url, sub="cached"), "RS256")
        assert gw.get("/auth/me", _bearer(known), auth=False)[0] == 200
        issuer.rotate()
        unknown = issuer.mint(_claims(issuer.base_url, sub="cached"), "RS256")
        cached_key = issuer.mint(_claims(issuer.base_url, sub="cached-2"), "RS256", key="retired")
        issuer.stop()
        deadline = time.monotonic() + 10
        while True:  # until a refetch was tried and failed (the limit allows one a second)
            status, body = gw.get("/auth/me", _bearer(unknown), auth=False)
            if status != 200 and "cannot be reached" in str(body) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 401 and "cannot be reached" in body["error"], body
        for _ in range(5):
            assert gw.get("/auth/me", _bearer(cached_key), auth=False)[0] == 200  # signed with a key of the cached set
        assert "identity provider keys not refreshed (503" in gw.log_tail(400)
        assert cached_key not in gw.log_path.read_text() and unknown not in gw.log_path.read_text()


def test_oidc_provider_mocks_id_token_is_verified_and_refused_as_a_bearer_token(tmp_path: Path, start_gateway) -> None:
    with run_provider_mock(tmp_path) as provider:
        client_id, secret = provider.register_client(["http://127.0.0.1:9/callback"])
        provider.set_user("u-77", {"preferred_username": "dr.mock", "name": "Mock", "realm_access": {"roles": ["pacs-reader"]}})
        gw = start_gateway(_env(provider.base_url, PACSGW_OIDC_AUDIENCE=client_id))
        token = provider.id_token(client_id, secret, "http://127.0.0.1:9/callback", "u-77")
        # Its signature, issuer and audience hold (the provider's discovery and keys are followed), and then it is
        # refused: an ID token, with the sign-in's nonce, proves a sign-in to the client and is no access token.
        status, body = gw.get("/dicom-web/studies", _bearer(token), auth=False)
        assert status == 401 and "not an access token" in body["error"], body
        tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
        status, body = gw.get("/auth/me", _bearer(tampered), auth=False)
        assert status == 401 and "signature" in body["error"], body


def test_the_provider_over_https_is_trusted_through_its_ca_file_only(tmp_path: Path, start_gateway) -> None:
    from gateway.tls_certs import write_trial_set

    ca, server = write_trial_set(tmp_path / "tls", ["localhost", "127.0.0.1"])
    with run_jwt_issuer(tmp_path, (str(ca.cert_file), str(server.cert_file), str(server.key_file))) as issuer:
        assert issuer.base_url.startswith("https://")
        token = issuer.mint(_claims(issuer.base_url, sub="over-tls"), "ES256")
        trusting = start_gateway(_env(issuer.base_url, PACSGW_OIDC_CA_FILE=str(ca.cert_file)), name="trusting")
        assert trusting.get("/auth/me", _bearer(token), auth=False)[0] == 200
        untrusting = start_gateway(_env(issuer.base_url), name="untrusting")  # the system's CAs do not know this one
        status, body = untrusting.get("/auth/me", _bearer(token), auth=False)
        assert status == 401 and "cannot be reached" in body["error"]
        assert "identity provider keys not refreshed (503" in untrusting.log_tail(400)


def test_a_callback_without_this_browsers_state_signs_no_one_in(tmp_path: Path, start_gateway) -> None:
    import urllib.parse

    from tests.peers.oidc import http_call

    with run_provider_mock(tmp_path) as provider:
        gw = start_gateway(_env(provider.base_url, PACSGW_OIDC_CLIENT_ID="viewer-client"))
        status, headers, _ = http_call(gw.base_url + "/auth/oidc/login")
        assert status == 302 and headers["Location"].startswith(provider.base_url + "/oauth2/authorize?")
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "Path=/auth/oidc" in cookie and "SameSite=Lax" in cookie
        state = urllib.parse.parse_qs(urllib.parse.urlparse(headers["Location"]).query)["state"][0]

        forged = urllib.parse.urlencode({"code": "stolen-code", "state": state})  # the state, but not the browser's cookie
        status, headers, _ = http_call(f"{gw.base_url}/auth/oidc/callback?{forged}")
        assert status == 302 and headers["Location"] == "/viewer/#sso-failed" and "Set-Cookie" not in headers
        other_flow = {"Cookie": "pacsgw_oidc=another-state.n.v"}
        status, headers, _ = http_call(f"{gw.base_url}/auth/oidc/callback?{forged}", headers=other_flow)
        assert status == 302 and headers["Location"] == "/viewer/#sso-failed"
        assert http_call(gw.base_url + "/auth/oidc/session", {}, method="POST")[0] == 404
        events = gw.audit_events(lambda es: sum(e["action"] == "sso-login" and e["outcome"] == 400 for e in es) >= 2)
        assert all("stolen-code" not in e["target"] for e in events)
