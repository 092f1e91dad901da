"""Film-free sharing: a radiologist makes a link and QR code for one study; a fresh browser opens it read-only;
the link carries no PHI, every use is audited, and a revoked link stops working."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from tests.viewer.conftest import canvas_pixels, log_in, new_page, open_study

IMPRESSION = "Phổi hai bên sáng đều, không thấy tổn thương."


def _call(gateway, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(gateway.base_url + path, data=data, method=method,
                                     headers={**gateway.auth_headers, "Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def test_share_link_opens_one_study_read_only_until_revoked(archive, browser, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, series = archive
    study_uid = series[0].StudyInstanceUID
    _call(gateway, "PUT", f"/studies/{study_uid}/report", {"findings": "Phantom.", "impression": IMPRESSION, "template": ""})
    _call(gateway, "POST", f"/studies/{study_uid}/report/final")

    log_in(page, gateway.base_url)
    open_study(page, "ACC0001", loaded=False)
    page.click("#share-open")
    page.fill("#share-label", "cho bệnh nhân")
    page.click("#share-create")
    url = page.locator("#share-url").input_value()
    expect(page.locator("#share-qr")).to_have_js_property("complete", True)
    assert page.locator("#share-qr").evaluate("img => img.naturalWidth") > 0  # the QR code, drawn
    page.screenshot(path=str(artifacts / "1-share-dialog.png"))
    assert re.fullmatch(re.escape(gateway.base_url) + r"/viewer/#share=share\.[\w-]{20,}", url), url
    for phi in ("MRN-0001", "Nguy", "079203001234", "ACC0001", study_uid):
        assert phi not in url
    expect(page.locator("#share-links li")).to_have_count(1)

    # A fresh browser, no login: the study, its final report, nothing else.
    visitor = new_page(browser)
    visitor.goto(url)
    expect(visitor.locator("#status")).to_contain_text("/60", timeout=20_000)
    assert "#share" not in visitor.url  # the token leaves the address bar at once
    expect(visitor.locator("#report-impression")).to_have_text(IMPRESSION)
    assert visitor.locator("#back").count() == 0 and visitor.locator("#search").count() == 0
    assert visitor.locator("#share-open").count() == 0 and visitor.locator("#findings").count() == 0
    pixels = canvas_pixels(visitor)
    assert pixels.max() - pixels.min() > 100
    visitor.screenshot(path=str(artifacts / "2-shared-view.png"))

    trail = _call(gateway, "GET", "/audit?limit=1000")
    uses = [e for e in trail if e["username"].startswith("share:")]
    assert uses and {e["action"] for e in uses} >= {"query", "retrieve"}
    assert any(e["action"] == "share-create" and e["username"] == "dr.lan" for e in trail)

    page.locator("#share-links .revoke").click()
    expect(page.locator("#share-links li em")).to_have_count(1)
    later = new_page(browser)
    for _ in range(20):  # the gateway caches a checked token for a few seconds
        later.goto(url)
        later.locator("#share-ended, #status").first.wait_for(timeout=20_000)
        if later.locator("#share-ended").count():
            break
        later.wait_for_timeout(1000)
    expect(later.locator("#share-ended")).to_be_visible()
    later.screenshot(path=str(artifacts / "3-revoked.png"))
