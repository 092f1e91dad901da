"""The viewer's single sign-on, end to end: headless Chromium, a real gateway process and oidc-provider-mock.

The mock checks the registered client's secret, the redirect URI and the nonce; it does not check PKCE (it registers
no code challenge extension), so the test checks the challenge the gateway sent against the verifier it kept.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from pathlib import Path

from playwright.sync_api import expect

from tests.conftest import storescu
from tests.factory import Patient, ct_series, write_files
from tests.peers.oidc import run_provider_mock
from tests.viewer.conftest import new_page


def test_viewer_signs_in_through_the_identity_provider_with_pkce(tmp_path: Path, browser, artifacts: Path) -> None:
    from tests.gateway_process import GatewayProcess

    with run_provider_mock(tmp_path) as provider:
        gw = GatewayProcess(tmp_path / "gw", {})
        callback = f"{gw.base_url}/auth/oidc/callback"
        client_id, secret = provider.register_client([callback])
        provider.set_user("7c1e-55", {"preferred_username": "dr.mai", "name": "Ngô Thị Mai",
                                      "realm_access": {"roles": ["offline_access", "pacs-reader"]}})  # fmt: skip
        provider.set_user("7c1e-66", {"preferred_username": "nv.khach", "realm_access": {"roles": ["guest"]}})
        gw.env.update({"PACSGW_OIDC_ISSUER": provider.base_url, "PACSGW_OIDC_CLIENT_ID": client_id,
                       "PACSGW_OIDC_CLIENT_SECRET": secret, "PACSGW_OIDC_ROLE_MAP": "pacs-reader=radiologist"})  # fmt: skip
        gw.start()
        try:
            study = ct_series(1, size=16, accession="ACC-SSO", patient=Patient(patient_id="MRN-SSO", name="Bùi^Văn Long", citizen_id="001000000901"))
            assert storescu(gw.dicom_port, write_files(study, tmp_path / "files")).returncode == 0
            gw.wait_idle()

            page = new_page(browser)
            urls: list[str] = []
            page.on("request", lambda request: urls.append(request.url))
            page.goto(gw.base_url + "/viewer/")
            page.locator("#sso").click()
            page.get_by_placeholder("sub").wait_for()

            authorize = urllib.parse.urlparse(next(u for u in urls if u.startswith(provider.base_url + "/oauth2/authorize")))
            asked = urllib.parse.parse_qs(authorize.query)
            flow = next(c for c in page.context.cookies() if c["name"] == "pacsgw_oidc")
            assert flow["httpOnly"] and flow["path"] == "/auth/oidc"
            state, nonce, verifier = flow["value"].split(".")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            assert asked["code_challenge_method"] == ["S256"] and asked["code_challenge"] == [challenge]
            assert asked["state"] == [state] and asked["nonce"] == [nonce] and asked["redirect_uri"] == [callback]
            assert "openid" in asked["scope"][0].split()

            page.get_by_placeholder("sub").fill("7c1e-55")
            page.get_by_role("button", name="Authorize").click()
            page.locator("#search").wait_for()
            expect(page.locator("#who")).to_contain_text("Ngô Thị Mai")
            page.fill("input[name=AccessionNumber]", "ACC-SSO")
            page.click("#search button[type=submit]")
            expect(page.locator("tr.study")).to_have_count(1)
            page.screenshot(path=str(artifacts / "signed-in.png"))

            token = page.evaluate("sessionStorage.getItem('pacsgw.token')")
            assert token and all(token not in u and secret not in u for u in urls)
            assert not [c for c in page.context.cookies() if c["name"] in ("pacsgw_oidc", "pacsgw_sso")]
            status, me = gw.get("/auth/me", {"Authorization": f"Bearer {token}"}, auth=False)
            assert status == 200 and me["username"] == "dr.mai" and me["role"] == "radiologist"
            events = gw.audit_events(lambda es: any(e["action"] == "sso-login" and e["username"] == "dr.mai" for e in es))
            assert any(e["target"] == "/auth/oidc/callback" and e["outcome"] == 200 for e in events if e["username"] == "dr.mai")

            # A person the provider knows but whose roles the gateway does not map: back at the sign-in page, told why.
            other = new_page(browser)
            other.goto(gw.base_url + "/viewer/")
            other.locator("#sso").click()
            other.get_by_placeholder("sub").fill("7c1e-66")
            other.get_by_role("button", name="Authorize").click()
            expect(other.locator("#login [role=alert]")).to_contain_text("Tài khoản bệnh viện chưa được cấp quyền")
            assert other.evaluate("sessionStorage.getItem('pacsgw.token')") is None
            assert "nv.khach" not in gw.log_path.read_text() and token not in gw.log_path.read_text()
        finally:
            gw.kill()
