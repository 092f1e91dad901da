"""The viewer never shows the wrong image: a slice shows its own pixels or a cleared canvas that says it is loading,
however it was reached; a JPEG stand-in is marked as a lossy preview, follows the window chosen, and ROI statistics
wait for the raw pixels.

A slow link is made deterministic (tests.viewer.canvas_probe): the responses for chosen frames are held back until
the test releases them, and the canvas' pixels tell which slice they are.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.viewer.canvas_probe import (
    LOADING, PREVIEW, Holder, assert_blank_and_loading, assert_shows, frames_of, slice_requests, set_slider,
)
from tests.viewer.conftest import STEP_OTHER_SLICES, STEP_SLICES, log_in, open_study, step_hu

def test_a_slice_never_shows_another_slices_pixels(archive, distinct, page, artifacts: Path) -> None:
    """Keys, slider and wheel to slices whose pixels are held back: a cleared canvas saying it is loading, never the
    slice left behind; a slice arriving after the reader moved on is not drawn; its own pixels once they come."""
    from playwright.sync_api import expect

    gateway, _ = archive
    series, _ = distinct
    uid = series[0].SeriesInstanceUID
    holder = Holder(page)
    first, last, fifteenth = (holder.hold(slice_requests(series[n - 1])) for n in (1, STEP_SLICES, 15))
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP", loaded=False)
    status = page.locator("#status")
    middle = STEP_SLICES // 2 + 1
    assert_shows(page, uid, middle, step_hu(1, middle))
    expect(status).to_contain_text(re.compile(rf"(Đang tải|Loading) {STEP_SLICES - 3}/{STEP_SLICES}"))  # all but the three held

    page.keyboard.press("End")
    expect(status).to_contain_text(re.compile(rf"(Lát|Slice) {STEP_SLICES}/{STEP_SLICES}"))
    assert_blank_and_loading(page)
    assert f"{STEP_SLICES}/{STEP_SLICES}" in page.locator("#frame .corner.bl").inner_text()
    page.screenshot(path=str(artifacts / "1-loading.png"))
    page.keyboard.press("Home")
    expect(status).to_contain_text(re.compile(rf"(Lát|Slice) 1/{STEP_SLICES}"))
    assert_blank_and_loading(page)
    set_slider(page, 14)
    expect(status).to_contain_text(re.compile(rf"(Lát|Slice) 15/{STEP_SLICES}"))
    assert_blank_and_loading(page)
    box = page.locator("#frame").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 100)
    expect(status).to_contain_text(re.compile(rf"(Lát|Slice) 16/{STEP_SLICES}"))
    assert_shows(page, uid, 16, step_hu(1, 16))
    page.keyboard.press("ArrowUp")
    assert_blank_and_loading(page)

    holder.release(last)  # slice 20 arrives while 15 is on screen: it must not be drawn
    expect(status).to_contain_text(re.compile(rf"(Đang tải|Loading) {STEP_SLICES - 2}/{STEP_SLICES}"))
    assert_blank_and_loading(page)
    holder.release(fifteenth)
    assert_shows(page, uid, 15, step_hu(1, 15))
    page.keyboard.press("End")
    assert_shows(page, uid, STEP_SLICES, step_hu(1, STEP_SLICES))
    holder.release(first)
    expect(status).not_to_contain_text(re.compile("Đang tải|Loading"))
    page.keyboard.press("Home")
    assert_shows(page, uid, 1, step_hu(1, 1))
    page.click("button[data-preset=lung]")  # a window change redraws the same slice's own pixels
    assert_shows(page, uid, 1, step_hu(1, 1), window=(-600, 1500), redrawn=True)


def test_changing_series_never_shows_the_previous_series(archive, distinct, page, artifacts: Path) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    series, other = distinct
    holder = Holder(page)
    second = holder.hold(frames_of(other[0].SeriesInstanceUID))
    metadata = holder.hold(lambda url: f"/series/{other[0].SeriesInstanceUID}/metadata" in url)
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP")
    middle = STEP_SLICES // 2 + 1
    assert_shows(page, series[0].SeriesInstanceUID, middle, step_hu(1, middle))

    page.locator(f".thumb[data-series='{other[0].SeriesInstanceUID}']").click()
    expect(page.locator("#frame .corner.bl")).to_contain_text(re.compile(r"(Loạt|Series) 2 "))  # its metadata on its way
    assert_blank_and_loading(page)
    expect(page.locator("#status")).to_have_text(LOADING)
    holder.release(metadata)
    expect(page.locator("#status")).to_contain_text(f"/{STEP_OTHER_SLICES}")
    assert_blank_and_loading(page)
    page.screenshot(path=str(artifacts / "series-loading.png"))
    holder.release(second)
    shown = STEP_OTHER_SLICES // 2 + 1
    assert_shows(page, other[0].SeriesInstanceUID, shown, step_hu(2, shown), raw=False)  # its stand-in first, perhaps
    assert_shows(page, other[0].SeriesInstanceUID, shown, step_hu(2, shown))
    page.locator(f".thumb[data-series='{series[0].SeriesInstanceUID}']").click()  # back: kept, drawn at once
    assert_shows(page, series[0].SeriesInstanceUID, middle, step_hu(1, middle))


def _window(status: str) -> tuple[float, float]:
    found = re.search(r"W (-?\d+) L (-?\d+)", status)
    assert found, status
    return float(found[2]), float(found[1])


def test_lossy_stand_in_follows_the_window_and_roi_waits_for_raw_pixels(archive, distinct, page, artifacts: Path) -> None:
    """With the raw frames held back the stand-in is on screen: badged, rendered again at a preset and after a W/L
    drag (marked "preview" until it is), and an ROI drawn on it has no value until the raw pixels give the HU."""
    from playwright.sync_api import expect

    gateway, _ = archive
    series, _ = distinct
    uid = series[0].SeriesInstanceUID
    holder = Holder(page)
    raw = holder.hold(frames_of(uid, rendered=False))
    rerendered = holder.hold(frames_of(uid, raw=False, windowed_only=True))
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP", loaded=False)
    middle = STEP_SLICES // 2 + 1
    hu = step_hu(1, middle)
    status = page.locator("#status")
    viewport = page.locator("#viewport")
    expect(viewport).to_have_attribute("data-fidelity", "preview")
    assert_shows(page, uid, middle, hu, raw=False)
    expect(page.locator("#lossy")).to_be_visible()
    expect(page.locator("#lossy")).to_have_text(re.compile(r"^(Ảnh xem trước, nén mất dữ liệu|Lossy preview)$"))
    expect(status).to_contain_text("W 400 L 40")
    expect(status).not_to_contain_text(PREVIEW)  # the stand-in is at the window the overlay names

    page.click("button[data-preset=lung]")
    expect(status).to_contain_text(re.compile(r"W 1500 L -600 \((xem trước|preview)\)"))  # not yet rendered at that window
    expect(page.locator("#frame .corner.br")).to_contain_text(PREVIEW)
    assert_shows(page, uid, middle, hu, raw=False)  # still the old rendering, and marked as such
    page.screenshot(path=str(artifacts / "1-preview-pending.png"))
    holder.release(rerendered)
    expect(status).not_to_contain_text(PREVIEW)
    assert "W 1500 L -600" in status.inner_text()
    assert_shows(page, uid, middle, hu, window=(-600, 1500), raw=False, redrawn=True)
    expect(page.locator("#lossy")).to_be_visible()

    box = page.locator("#frame").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx - 100, cy - 100, steps=8)  # narrower and lower: W 1100 L -800
    page.mouse.up()
    expect(status).not_to_contain_text(PREVIEW)  # rendered again once the window rests
    dragged = _window(status.inner_text())
    assert dragged != (-600, 1500)
    assert_shows(page, uid, middle, hu, window=dragged, raw=False)
    page.screenshot(path=str(artifacts / "2-preview-windowed.png"))

    page.click("#tool-roi")
    page.mouse.move(cx - 60, cy - 60)
    page.mouse.down()
    page.mouse.move(cx + 60, cy + 60, steps=5)
    page.mouse.up()
    roi = page.locator("#measurements li")
    expect(roi).to_have_text(re.compile(r"^— \((đang tải điểm ảnh…|pixels loading…)\)$"))  # never HU from JPEG greys

    holder.release(raw)
    expect(viewport).to_have_attribute("data-fidelity", "raw")
    expect(page.locator("#lossy")).to_be_hidden()
    expect(roi).to_have_text(re.compile(rf"^{hu}\.0 ± 0\.0 HU · \d+\.\d mm²$"))
    assert_shows(page, uid, middle, hu, window=dragged)
    page.screenshot(path=str(artifacts / "3-full-fidelity.png"))


@pytest.mark.parametrize("language", ["vi", "en"])
def test_loading_and_preview_speak_the_readers_language(archive, distinct, browser, language: str) -> None:
    from playwright.sync_api import expect

    from tests.viewer.conftest import new_page

    gateway, _ = archive
    series, _ = distinct
    page = new_page(browser)
    page.add_init_script(f"localStorage.setItem('pacsgw.language', '{language}')")
    holder = Holder(page)
    holder.hold(frames_of(series[0].SeriesInstanceUID, rendered=False))
    holder.hold(slice_requests(series[0]))
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP", loaded=False)
    expect(page.locator("#lossy")).to_have_text("Ảnh xem trước, nén mất dữ liệu" if language == "vi" else "Lossy preview")
    page.keyboard.press("Home")
    expect(page.locator("#loading")).to_have_text("Đang tải…" if language == "vi" else "Loading…")


def test_a_stand_in_at_the_servers_own_window_names_no_numbers(archive, page) -> None:
    """The ultrasound clip has no window in its header: the server renders it from the pixels' range, which the
    overlay cannot know, so it says "auto (preview)" until a window is chosen and rendered, or raw pixels come."""
    from playwright.sync_api import expect

    gateway, _ = archive
    holder = Holder(page)
    raw = holder.hold(lambda url: "/frames/" in url and "/rendered" not in url)
    log_in(page, gateway.base_url)
    open_study(page, "ACC-US", loaded=False)
    status = page.locator("#status")
    expect(page.locator("#viewport")).to_have_attribute("data-fidelity", "preview")
    expect(status).to_contain_text(re.compile(r"W/L (tự động|auto) \((xem trước|preview)\)"))
    assert not re.search(r"W \d+ L \d+", status.inner_text())
    page.click("button[data-preset=abdomen]")
    expect(status).to_contain_text("W 400 L 40")
    expect(status).not_to_contain_text(PREVIEW)  # rendered again at that window
    expect(page.locator("#lossy")).to_be_visible()
    holder.release(raw)
    expect(page.locator("#viewport")).to_have_attribute("data-fidelity", "raw")
    expect(page.locator("#lossy")).to_be_hidden()
    assert "W 400 L 40" in status.inner_text()
