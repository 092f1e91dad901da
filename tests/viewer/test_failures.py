"""A request that fails costs the viewer that request only: a failed JPEG stand-in still lets the slice's raw pixels
load, and a raw frame that fails once is asked again before the slice says it could not be loaded.

Failures are made by the browser itself (Playwright answers chosen requests with a 500); the MRN-STEP study's slices
are each flat at a level of their own, so the canvas' pixels tell which slice is drawn.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from tests.viewer.conftest import STEP_SLICES, log_in, open_study, step_hu
from tests.viewer.canvas_probe import LOADING, Holder, assert_shows, frames_of, set_slider

FAILED = re.compile(r"Không tải được|Could not load")


class Failer:
    """Answers the first ``times`` requests whose URL a rule matches with a 500; lets the later ones through.

    Registered after a Holder it sees requests first, and hands those it lets through on to the Holder."""

    def __init__(self, page, rule: Callable[[str], bool], times: int = 1) -> None:
        self.times = times
        self.seen = 0
        page.route(rule, self._route)

    def _route(self, route) -> None:
        self.seen += 1
        if self.seen <= self.times:
            route.fulfill(status=500, content_type="application/json", body='{"error": "rendering failed"}')
        else:
            route.fallback()


def _raw(ds) -> Callable[[str], bool]:
    return lambda url: f"/instances/{ds.SOPInstanceUID}/frames/" in url and "/rendered" not in url


def _rendered(ds) -> Callable[[str], bool]:
    return lambda url: f"/instances/{ds.SOPInstanceUID}/frames/" in url and "/rendered" in url


def _wait_until(page, done: Callable[[], bool], timeout_ms: float = 10_000) -> None:
    """Polls (route handlers run while the page is waited on) until ``done`` answers true."""
    waited = 0.0
    while not done():
        assert waited < timeout_ms, "timed out"
        page.wait_for_timeout(20)
        waited += 20


def test_a_failed_stand_in_on_a_slow_link_still_lets_the_raw_pixels_load(archive, distinct, page) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    series, _ = distinct
    uid = series[0].SeriesInstanceUID
    middle = STEP_SLICES // 2 + 1
    third = series[2]
    holder = Holder(page)
    others = holder.hold(frames_of(uid, rendered=False))  # every raw frame held: the link is slow
    first_raw = holder.hold(_raw(series[middle - 1]))
    failer = Failer(page, _rendered(third), times=1_000)  # slice 3 cannot be rendered as a JPEG
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP", loaded=False)
    assert_shows(page, uid, middle, step_hu(1, middle), raw=False)  # the middle slice's stand-in
    _wait_until(page, lambda: any(first_raw(r.request.url) for r in holder.held))
    asked = time.monotonic()
    _wait_until(page, lambda: time.monotonic() - asked > 0.05)  # 8 KiB in over 50 ms: what the viewer calls slow
    holder.release(first_raw)  # the first raw frame, late: stand-ins for every slice come next
    _wait_until(page, lambda: failer.seen >= 1)

    set_slider(page, 2)
    expect(page.locator("#viewport")).to_have_attribute("data-slice", "")
    expect(page.locator("#loading")).to_have_text(LOADING)  # not "could not load": its raw pixels are on their way
    holder.release(others)
    assert_shows(page, uid, 3, step_hu(1, 3))  # its own raw pixels
    expect(page.locator("#status")).not_to_contain_text(FAILED)
    assert failer.seen == 1  # the stand-in that failed was not asked for again


def test_the_first_images_failed_stand_in_does_not_stop_the_series(archive, distinct, page) -> None:
    gateway, _ = archive
    series, _ = distinct
    middle = STEP_SLICES // 2 + 1
    failer = Failer(page, _rendered(series[middle - 1]))
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP")
    assert failer.seen == 1
    assert_shows(page, series[0].SeriesInstanceUID, middle, step_hu(1, middle))
    page.keyboard.press("Home")
    assert_shows(page, series[0].SeriesInstanceUID, 1, step_hu(1, 1))


def test_a_raw_frame_that_fails_once_is_asked_again_and_drawn(archive, distinct, page) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    series, _ = distinct
    failer = Failer(page, _raw(series[3]), times=1)  # one transient error on slice 4's raw frame
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP", loaded=False)
    middle = STEP_SLICES // 2 + 1
    expect(page.locator("#viewport")).to_have_attribute("data-slice", f"{series[0].SeriesInstanceUID}:{middle - 1}")
    set_slider(page, 3)
    assert_shows(page, series[0].SeriesInstanceUID, 4, step_hu(1, 4))
    assert failer.seen == 2
    expect(page.locator("#status")).not_to_contain_text(re.compile("Đang tải|Loading"))  # every slice loaded
    expect(page.locator("#status")).not_to_contain_text(FAILED)


def test_a_raw_frame_that_fails_again_says_so(archive, distinct, page) -> None:
    from playwright.sync_api import expect

    gateway, _ = archive
    series, _ = distinct
    Holder(page).hold(_rendered(series[3]))  # and no stand-in of it either, should the link count as slow
    failer = Failer(page, _raw(series[3]), times=1_000)
    log_in(page, gateway.base_url)
    open_study(page, "ACC-STEP", loaded=False)
    middle = STEP_SLICES // 2 + 1
    expect(page.locator("#viewport")).to_have_attribute("data-slice", f"{series[0].SeriesInstanceUID}:{middle - 1}")
    set_slider(page, 3)
    expect(page.locator("#loading")).to_contain_text(FAILED)
    expect(page.locator("#status")).to_contain_text(re.compile(r"(Không tải được|Could not load) 1"))
    assert failer.seen == 2  # asked once more, then given up on
    page.keyboard.press("ArrowDown")  # the others are drawn
    assert_shows(page, series[0].SeriesInstanceUID, 5, step_hu(1, 5))
