"""The web viewer in headless Chromium: log in, find a study by an accent-free name, read it.

Screenshots of each step are saved next to the test's temporary files; the
checks look at the canvas pixels, not only at the page having loaded.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.viewer.conftest import SLICES, canvas_pixels as _canvas, log_in, open_study


def _log_in(page, base: str) -> None:
    log_in(page, base)
    page.locator("#search").wait_for()


def test_read_a_study(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, series = archive
    _log_in(page, gateway.base_url)
    page.screenshot(path=str(artifacts / "1-worklist.png"))
    page.fill("input[name=PatientName]", "nguyen van an")  # no accents, lower case
    page.click("#search button[type=submit]")
    expect(page.locator("tr.study")).to_have_count(2)  # the search replaced the full list: this CT and its 2023 prior
    row = page.locator("tr.study", has_text="ACC0001")
    assert "Nguyễn Văn An" in row.inner_text()  # the name as people write it, accents kept
    page.screenshot(path=str(artifacts / "2-found.png"))
    row.click()
    status = page.locator("#status")
    status.wait_for()
    # Waits use locators, never page-side eval: the viewer's policy forbids eval, as it should.
    expect(status).to_contain_text(f"/{SLICES}")
    expect(status).not_to_contain_text(re.compile("Đang tải|Loading"), timeout=60_000)
    assert f"/{SLICES}" in status.inner_text()
    middle = _canvas(page)
    assert middle.max() - middle.min() > 100  # an image, not a blank canvas
    page.screenshot(path=str(artifacts / "3-opened.png"))

    for _ in range(50 - SLICES // 2 - 1):
        page.keyboard.press("ArrowDown")
    assert status.inner_text().startswith("Lát 50/") or status.inner_text().startswith("Slice 50/")
    slice50 = _canvas(page)
    # Soft tissue shows mid-grey (about 128) on black air; the disc grows with the slice number.
    assert (slice50 > 64).mean() > (middle > 64).mean()
    page.screenshot(path=str(artifacts / "4-slice50.png"))

    page.click("button[data-preset=lung]")  # window 1500 wide around -600: tissue and air both lighter
    lung = _canvas(page)
    assert lung.mean() != pytest.approx(slice50.mean(), abs=5)
    assert "W 1500 L -600" in status.inner_text()
    page.screenshot(path=str(artifacts / "5-window.png"))


def test_dicom_strings_are_shown_as_text_never_run(archive, page, artifacts: Path) -> None:
    gateway, _ = archive
    _log_in(page, gateway.base_url)
    page.fill("input[name=PatientID]", "MRN-XSS")
    page.click("#search button[type=submit]")
    row = page.locator("tr.study", has_text="MRN-XSS")
    row.wait_for()
    # In a PN, "=" separates component groups: the alphabetic group "<img src" is what the worklist shows, as text.
    assert "<img src" in row.inner_text()
    assert "&lt;img src" in row.inner_html()
    assert page.locator("#results img").count() == 0 and page.dialogs == []
    page.screenshot(path=str(artifacts / "xss.png"))


def test_viewer_is_served_under_a_strict_policy(archive) -> None:
    gateway, _ = archive
    import urllib.request

    with urllib.request.urlopen(gateway.base_url + "/viewer", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    total = sum(p.stat().st_size for p in Path(__file__).resolve().parents[2].joinpath("viewer").iterdir() if p.suffix in (".html", ".js", ".css"))
    assert total < 300 * 1024


def test_zoom_rotate_thumbnails_help(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    _log_in(page, gateway.base_url)
    page.fill("input[name=AccessionNumber]", "ACC0001")
    page.click("#search button[type=submit]")
    expect(page.locator("tr.study")).to_have_count(1)
    page.locator("tr.study").first.click()
    canvas = page.locator("#viewport")
    expect(page.locator("#status")).to_contain_text(f"/{SLICES}")
    # An <img> without a src already counts as complete: wait for the fetched thumbnail first.
    expect(page.locator(".thumb img").first).to_have_attribute("src", re.compile(r"^blob:"))
    expect(page.locator(".thumb img").first).to_have_js_property("complete", True)
    assert page.locator(".thumb img").first.evaluate("img => img.naturalWidth") > 0  # the series thumbnail, rendered
    before = canvas.bounding_box()
    page.click("#zoom-in")
    page.click("#zoom-in")
    after = canvas.bounding_box()
    assert after["width"] > before["width"] * 1.4
    page.click("#rotate")
    assert "rotate(90deg)" in canvas.evaluate("c => c.style.transform")
    page.keyboard.press("0")
    assert canvas.evaluate("c => c.style.transform") == "translate(0px, 0px) rotate(0deg) scale(1, 1)"
    page.click("#help-open")
    expect(page.locator("#help")).to_be_visible()
    assert "shift + drag" in page.locator("#help").inner_text()
    page.screenshot(path=str(artifacts / "tools.png"))


def test_length_in_millimetres(archive, page, artifacts: Path) -> None:
    """64 pixels across a 0.7 mm Pixel Spacing is 44.8 mm, whatever the zoom."""
    from playwright.sync_api import expect

    gateway, _ = archive
    _log_in(page, gateway.base_url)
    open_study(page, "ACC0001")  # waits for the stack to exist, then for its raw pixels: opening resets the zoom
    page.click("#zoom-in")
    page.click("#tool-length")
    frame = page.locator("#frame").bounding_box()
    fit = min(frame["width"] / 128, frame["height"] / 128) * 1.25

    def screen(x: float, y: float) -> tuple[float, float]:
        return frame["x"] + frame["width"] / 2 + (x - 64) * fit, frame["y"] + frame["height"] / 2 + (y - 64) * fit

    page.mouse.move(*screen(32, 64))
    page.mouse.down()
    page.mouse.move(*screen(96, 64), steps=5)
    page.mouse.up()
    expect(page.locator("#measurements li")).to_have_text("44.8 mm")
    page.screenshot(path=str(artifacts / "length.png"))


def test_favicon_is_public_and_no_page_load_is_refused(archive, page) -> None:
    """Browsers ask for /favicon.ico unprompted, without a token: it is served, and the viewer links its icon."""
    import urllib.request

    gateway, _ = archive
    with urllib.request.urlopen(gateway.base_url + "/favicon.ico", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("image/svg+xml")
        assert b"<svg" in response.read()
    refused: list[str] = []
    page.on("response", lambda r: refused.append(f"{r.request.method} {r.url}") if r.status == 401 else None)
    page.goto(gateway.base_url + "/viewer")
    assert page.locator("link[rel=icon]").count() == 1
    icon = page.locator("link[rel=icon]").get_attribute("href")
    answer = page.request.get(gateway.base_url + icon)  # as the browser fetches it: no Authorization header
    assert answer.status == 200 and answer.headers["content-type"].startswith("image/")
    _log_in(page, gateway.base_url)
    open_study(page, "ACC0001")
    page.reload()  # a page load with a session
    page.locator("#search").wait_for()
    assert refused == [], refused
