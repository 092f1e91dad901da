"""Two-factor login in the viewer: an administrator's first login enrols by QR code (the key read from the page as
an authenticator app is given it), sees the recovery codes once, and later logs in with the app's code or a
recovery code; a wrong code is refused on the page."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pyotp
import segno
from PIL import Image

from tests.viewer.conftest import PASSWORD, log_in

ADMIN = "viewer.admin"
BORDER = 4  # quiet-zone modules around the code (gateway.http.login_totp.qr_svg)


def seen_modules(page, size: int) -> list[list[bool]]:
    """The QR code's modules as a phone's camera would see them on the screen (dark: True): the page's pixels at each
    module's centre, whatever the page's background."""
    shot = Image.open(io.BytesIO(page.locator("#totp-qr").screenshot())).convert("L")
    pitch = shot.width / (size + 2 * BORDER)
    return [[shot.getpixel((int((BORDER + x + 0.5) * pitch), int((BORDER + y + 0.5) * pitch))) < 128 for x in range(size)]
            for y in range(size)]  # fmt: skip


def test_an_administrator_enrols_by_qr_code_then_logs_in_with_the_apps_code(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _series = archive
    gateway.add_user(ADMIN, "admin", password=PASSWORD)
    log_in(page, gateway.base_url, ADMIN, "not the password at all")
    expect(page.locator("#login .error")).to_have_text("Sai tên đăng nhập hoặc mật khẩu")  # no second step shown
    assert page.locator("#second-factor").count() == 0
    log_in(page, gateway.base_url, ADMIN)
    qr = page.locator("#totp-qr")
    expect(qr).to_have_js_property("complete", True)
    assert qr.evaluate("img => img.naturalWidth") > 0  # the QR code, drawn
    uri = page.locator("#totp-uri").inner_text()
    app = pyotp.parse_uri(uri)  # what an authenticator app takes in, typed from the page
    assert app.secret == page.locator("#totp-secret").inner_text() and app.issuer == "PACS gateway" and app.name == ADMIN
    expected = [[bool(m) for m in row] for row in segno.make_qr(uri, error="m").matrix]
    assert seen_modules(page, len(expected)) == expected  # the QR code on the screen is of that URI
    page.screenshot(path=str(artifacts / "1-enrol.png"))

    page.fill("#totp input[name=code]", app.now())
    page.click("#totp button[type=submit]")
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    codes = page.locator("#recovery-codes li").all_inner_texts()
    page.screenshot(path=str(artifacts / "2-recovery-codes.png"))
    page.click("#recovery-done")
    expect(page.locator("#search")).to_be_visible()

    page.click("#logout")
    log_in(page, gateway.base_url, ADMIN)
    expect(page.locator("#totp")).to_be_visible()
    assert page.locator("#totp-qr").count() == 0  # enrolled: no key shown again
    taken = {app.now(), app.at(time.time() + app.interval), app.at(time.time() - app.interval)}
    page.fill("#totp input[name=code]", next(c for c in ("000000", "111111", "222222") if c not in taken))
    page.click("#totp button[type=submit]")
    expect(page.locator("#totp .error")).to_have_text("wrong code")
    page.fill("#totp input[name=code]", app.at(time.time() + app.interval))  # a phone a step ahead
    page.click("#totp button[type=submit]")
    expect(page.locator("#search")).to_be_visible()
    page.screenshot(path=str(artifacts / "3-logged-in.png"))

    page.click("#logout")
    log_in(page, gateway.base_url, ADMIN)
    page.fill("#totp input[name=code]", codes[0])
    page.click("#totp button[type=submit]")
    expect(page.locator("#search")).to_be_visible()
    page.click("#logout")
    log_in(page, gateway.base_url, ADMIN)
    page.fill("#totp input[name=code]", codes[0])  # spent
    page.click("#totp button[type=submit]")
    expect(page.locator("#totp .error")).to_contain_text("recovery code")
    assert page.locator("#search").count() == 0
