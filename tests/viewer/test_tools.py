"""Viewer tools on the phantom: angle, ROI statistics in HU, orientation markers, layouts with a prior, cine, touch."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.viewer.conftest import US_FRAMES, canvas_pixels, log_in, new_page, open_study


def _screen(page, x: float, y: float, selector: str = "#frame", size: int = 128) -> tuple[float, float]:
    """Screen coordinates of image pixel (x, y) in a viewport at zoom 1 (fit), no rotation."""
    frame = page.locator(selector).bounding_box()
    fit = min(frame["width"] / size, frame["height"] / size)
    return frame["x"] + frame["width"] / 2 + (x - size / 2) * fit, frame["y"] + frame["height"] / 2 + (y - size / 2) * fit


def _drag(page, a: tuple[float, float], b: tuple[float, float]) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=5)
    page.mouse.up()


def _expected_roi(slice_number: int, box: tuple[float, float, float, float]) -> tuple[float, float]:
    """Mean and SD (HU) of the phantom inside the ellipse inscribed in the box, pixel centres inside."""
    y, x = np.mgrid[:128, :128]
    hu = np.where((x - 64) ** 2 + (y - 64) ** 2 < (10 + slice_number) ** 2, 40.0, -1000.0)
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
    inside = ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1
    return float(hu[inside].mean()), float(hu[inside].std())


def test_angle_and_roi_statistics(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    log_in(page, gateway.base_url)
    open_study(page, "ACC0001")  # opens on the middle slice, 31: disc radius 41
    page.click("#tool-angle")
    _drag(page, _screen(page, 32, 64), _screen(page, 64, 64))  # first arm, ending at the vertex
    page.mouse.click(*_screen(page, 64, 32))  # second arm: straight up from the vertex
    expect(page.locator("#measurements li")).to_have_text("90.0°")

    page.click("#tool-roi")
    _drag(page, _screen(page, 54, 54), _screen(page, 74, 74))  # well inside the disc: soft tissue only
    expect(page.locator("#measurements li").nth(1)).to_have_text(re.compile(r"^40\.0 ± 0\.0 HU · \d+\.\d mm²$"))
    # Across the disc's edge (radius 41 around 64): tissue and air, so the SD is large; checked against numpy.
    box = (90.0, 50.0, 120.0, 80.0)
    _drag(page, _screen(page, box[0], box[1]), _screen(page, box[2], box[3]))
    label = page.locator("#measurements li").nth(2).inner_text()
    mean, sd = (float(v) for v in re.match(r"^(-?[\d.]+) ± ([\d.]+) HU", label).groups())
    want_mean, want_sd = _expected_roi(31, box)
    assert 100 < sd and mean == pytest.approx(want_mean, abs=15) and sd == pytest.approx(want_sd, abs=15), label
    page.screenshot(path=str(artifacts / "angle-roi.png"))
    page.keyboard.press("Delete")
    expect(page.locator("#measurements li")).to_have_count(0)


def test_orientation_markers_follow_rotation(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    log_in(page, gateway.base_url)
    open_study(page, "ACC0001", loaded=False)
    # Axial, Image Orientation (Patient) 1\0\0\0\1\0: the patient's left on the screen's right, anterior at the top.
    markers = {edge: page.locator(f"#frame .marker.{edge}") for edge in ("top", "bottom", "left", "right")}
    expect(markers["right"]).to_have_text("L")
    assert [markers[e].inner_text() for e in ("top", "bottom", "left")] == ["A", "P", "R"]
    page.click("#rotate")  # 90° clockwise: anterior turns to the right
    expect(markers["right"]).to_have_text("A")
    assert markers["top"].inner_text() == "R"
    page.click("#flip-h")  # flips the image across its own vertical axis: its left and right, now at top and bottom, swap
    expect(markers["top"]).to_have_text("L")
    assert markers["right"].inner_text() == "A"
    corners = page.locator("#frame .corner.tl").inner_text()
    assert "Nguyễn Văn An" in corners and "MRN-0001" in corners
    assert "ACC0001" in page.locator("#frame .corner.tr").inner_text()
    page.keyboard.press("t")  # overlay off, markers stay
    expect(page.locator("#frame .corner.tl")).to_be_hidden()
    page.screenshot(path=str(artifacts / "orientation.png"))


def test_layouts_compare_with_prior(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    log_in(page, gateway.base_url)
    open_study(page, "ACC0001", loaded=False)
    prior = page.locator("#priors .prior")
    expect(prior).to_have_count(1)
    assert "10/01/2023" in prior.inner_text()
    prior.click()
    page.locator("#priors .thumb").first.click()
    # A prior opens beside the current study: two viewports, the second one showing the 2023 CT.
    expect(page.locator("#grid .cell")).to_have_count(2)
    expect(page.locator("#status-2")).to_contain_text("/4")
    expect(page.locator("#frame-2 .corner.tr")).to_contain_text(re.compile("CA CŨ|PRIOR"))
    assert "10/01/2023" in page.locator("#frame-2 .corner.tr").inner_text()
    first, second = canvas_pixels(page, "#viewport"), canvas_pixels(page, "#viewport-2")
    assert first.std() > 20 and second.std() > 20  # both drawn (the prior is noise, the current a disc)
    page.keyboard.press("ArrowDown")  # keys go to the active viewport: the prior's
    expect(page.locator("#status-2")).to_contain_text(re.compile(r"(Lát|Slice) 4/4"))
    # Back and forth between series in one viewport: the prior is kept, at its slice, not fetched again.
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/metadata" in r.url or "/frames/" in r.url else None)
    page.locator("#series > .thumb").first.click()
    expect(page.locator("#status-2")).to_contain_text("/60")
    page.locator("#priors .thumb").first.click()
    expect(page.locator("#status-2")).to_contain_text(re.compile(r"(Lát|Slice) 4/4"))
    prior_series = page.locator("#priors .thumb").first.get_attribute("data-series")
    assert not [url for url in asked if prior_series in url], asked
    page.click("[data-layout='2x2']")
    expect(page.locator("#grid .cell")).to_have_count(4)
    page.screenshot(path=str(artifacts / "layout-2x2.png"))
    page.click("[data-layout='1x1']")
    expect(page.locator("#grid .cell")).to_have_count(1)


def test_cine_plays_a_multiframe_clip_at_its_frame_rate(archive, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    log_in(page, gateway.base_url)
    open_study(page, "ACC-US")
    status = page.locator("#status")
    expect(status).to_contain_text(f"/{US_FRAMES}")
    cine = page.locator("#grid .cine")
    expect(cine).to_be_visible()
    assert cine.locator(".fps").input_value() == "10"  # Frame Time 100 ms
    before = canvas_pixels(page).mean()
    shown = {status.inner_text().split("·")[0]}
    cine.locator(".play").click()
    for _ in range(6):
        page.wait_for_timeout(250)
        shown.add(status.inner_text().split("·")[0])
    cine.locator(".play").click()  # pause
    assert len(shown) >= 4, shown  # about ten frames a second
    paused = status.inner_text()
    page.wait_for_timeout(400)
    assert status.inner_text() == paused
    assert canvas_pixels(page).mean() != pytest.approx(before, abs=2)  # a different frame, a different grey
    page.screenshot(path=str(artifacts / "cine.png"))


def test_touch_pinch_zooms_and_one_finger_windows(archive, browser, artifacts: Path) -> None:
    page = new_page(browser, has_touch=True, is_mobile=False)
    gateway, _ = archive
    log_in(page, gateway.base_url)
    open_study(page, "ACC0001")
    box = page.locator("#frame").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)

    def touch(kind: str, points: list[tuple[float, float]]) -> None:
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]})

    touch("touchStart", [(cx - 40, cy), (cx + 40, cy)])
    for step in range(1, 11):
        touch("touchMove", [(cx - 40 - 8 * step, cy), (cx + 40 + 8 * step, cy)])
    touch("touchEnd", [])
    scale = float(re.search(r"scale\(([-\d.]+)", page.locator("#viewport").evaluate("c => c.style.transform")).group(1))
    assert scale == pytest.approx(3.0, rel=0.1)  # fingers 80 px apart, then 240: zoom 3
    status = page.locator("#status")
    before = status.inner_text()
    touch("touchStart", [(cx, cy)])
    for step in range(1, 6):
        touch("touchMove", [(cx + 10 * step, cy + 5 * step)])
    touch("touchEnd", [])
    assert status.inner_text() != before and "W 400 L 40" not in status.inner_text()  # one finger: window/level
    page.screenshot(path=str(artifacts / "touch.png"))
