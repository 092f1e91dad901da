"""Holding chosen viewer requests back, and reading back what the canvas shows (the fidelity and failure tests).

A slow link is made deterministic: the responses for chosen frames are held back until a test releases them.
The MRN-STEP study's slices are each flat at a level of their own, so the canvas' pixels tell which slice they are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

LOADING = re.compile(r"^(Đang tải…|Loading…)$")
PREVIEW = re.compile(r"xem trước|preview")


class Holder:
    """Holds back the responses to DICOMweb requests whose URL a rule matches, until released."""

    def __init__(self, page) -> None:
        self.rules: list[Callable[[str], bool]] = []
        self.held: list = []
        page.route(lambda url: "/dicom-web/" in url, self._route)

    def _route(self, route) -> None:
        if any(rule(route.request.url) for rule in self.rules):
            self.held.append(route)
        else:
            route.continue_()

    def hold(self, rule: Callable[[str], bool]) -> Callable[[str], bool]:
        self.rules.append(rule)
        return rule

    def release(self, rule: Callable[[str], bool]) -> None:
        self.rules.remove(rule)
        for route in [r for r in self.held if rule(r.request.url)]:
            self.held.remove(route)
            route.continue_()


def slice_requests(ds) -> Callable[[str], bool]:
    """A rule for every request of one slice's pixels: its raw frame and its renderings."""
    return lambda url: f"/instances/{ds.SOPInstanceUID}/frames/" in url


def frames_of(series_uid: str, *, raw: bool = True, rendered: bool = True, windowed_only: bool = False) -> Callable[[str], bool]:
    """A rule for a series' pixel requests: raw frames, renderings (or only those at a chosen window)."""

    def rule(url: str) -> bool:
        if f"/series/{series_uid}/" not in url or "/frames/" not in url:
            return False
        if "/rendered" in url:
            return rendered and (not windowed_only or "window=" in url)
        return raw

    return rule


def grey(hu: float, center: float = 40, width: float = 400) -> int:
    """The grey level the viewer's lookup table gives a modality value under a window."""
    return max(0, min(255, round((hu - (center - width / 2)) / width * 255)))


def canvas(page, selector: str = "#viewport") -> dict:
    """The canvas' own pixels (not the screen): the range of its red channel and its most opaque pixel."""
    return page.locator(selector).evaluate(
        """c => { const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let low = 255, high = 0, alpha = 0;
        for (let i = 0; i < d.length; i += 4) { low = Math.min(low, d[i]); high = Math.max(high, d[i]); alpha = Math.max(alpha, d[i + 3]); }
        return { low, high, alpha }; }"""
    )


def assert_blank_and_loading(page, suffix: str = "") -> None:
    from playwright.sync_api import expect

    expect(page.locator(f"#loading{suffix}")).to_be_visible()
    expect(page.locator(f"#loading{suffix}")).to_have_text(LOADING)
    expect(page.locator(f"#viewport{suffix}")).to_have_attribute("data-slice", "")
    assert canvas(page, f"#viewport{suffix}")["alpha"] == 0  # nothing drawn: no pixels of any other slice
    expect(page.locator(f"#lossy{suffix}")).to_be_hidden()


def assert_shows(
    page, series_uid: str, number: int, hu: float, *, window: tuple[float, float] = (40, 400), raw: bool = True,
    redrawn: bool = False,
) -> None:
    """The viewport shows that slice, at that window. ``redrawn``: the same slice is being drawn again (a window
    change, drawn at the next animation frame after the click returns), so its new pixels are waited for; otherwise
    the pixels must be right at once, since a slice's pixels are drawn before it is named in ``data-slice``."""
    from playwright.sync_api import expect

    viewport = page.locator("#viewport")
    expect(viewport).to_have_attribute("data-slice", f"{series_uid}:{number - 1}")
    if raw:
        expect(viewport).to_have_attribute("data-fidelity", "raw")
    want = grey(hu, *window)
    tolerance = 0 if raw else 3  # a flat JPEG is all but exact

    def drawn(pixels: dict) -> bool:
        return pixels["alpha"] == 255 and abs(pixels["low"] - want) <= tolerance and abs(pixels["high"] - want) <= tolerance

    deadline = time.monotonic() + (5.0 if redrawn else 0.0)
    while not drawn(pixels := canvas(page)) and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert drawn(pixels), (pixels, want)
    expect(page.locator("#loading")).to_be_hidden()


def set_slider(page, index: int) -> None:
    page.locator("#slice").evaluate("(s, i) => { s.value = String(i); s.dispatchEvent(new Event('input')); }", index)
