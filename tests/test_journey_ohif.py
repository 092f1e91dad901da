"""Journey: a radiologist opens the OHIF viewer (the prebuilt app from npm) on the gateway's DICOMweb.

Headless Chromium (Debian's, driven by Playwright) lists the study from
QIDO-RS and displays it from WADO-RS: the viewport's pixels must show the
image, not a blank canvas. Screenshots of both steps are saved next to the
test's temporary files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import storescu
from tests.factory import ct_series, write_files
from tests.peers.ohif import ohif_dist, serve_ohif

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


def test_ohif_lists_and_displays_a_study(start_gateway, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    gateway = start_gateway()
    series = ct_series(12, size=256)
    for ds in series:  # a bright disc on a dark background, so a displayed image is unmistakable
        y, x = np.mgrid[:256, :256]
        ds.PixelData = np.where((x - 128) ** 2 + (y - 128) ** 2 < 80**2, 3000, 100).astype(np.uint16).tobytes()
        ds.WindowCenter, ds.WindowWidth = 1000, 2000
    assert storescu(gateway.dicom_port, write_files(series, tmp_path / "files")).returncode == 0
    gateway.wait_idle()
    dist = ohif_dist(tmp_path)
    with serve_ohif(dist, gateway.base_url, gateway.token or "") as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/", wait_until="domcontentloaded")
        page.get_by_text("MRN-0001").first.wait_for(timeout=60_000)  # the study list, from QIDO-RS
        page.screenshot(path=str(tmp_path / "ohif-study-list.png"))

        page.goto(f"{base}/viewer?StudyInstanceUIDs={series[0].StudyInstanceUID}", wait_until="domcontentloaded")
        canvas = page.locator("canvas.cornerstone-canvas").first
        canvas.wait_for(timeout=60_000)
        for label in ("Skip all", "Confirm and hide"):  # the first-visit tour and notice dim the page
            button = page.get_by_text(label, exact=True)
            if button.count():
                button.first.click()
        disc = 0.0
        for _ in range(60):  # until the image is drawn
            pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L")).astype(int)
            # The disc: a large area clearly brighter than the black around it (whatever dims the page).
            disc = float((pixels > pixels.min() + 40).mean())
            if disc > 0.1:
                break
            page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "ohif-viewer.png"))
        browser.close()
    # The disc covers about a third of the image, and so of the viewport's square.
    assert disc > 0.1, f"the viewport shows no image (disc fraction {disc:.3f}); see {tmp_path}"


@pytest.fixture(autouse=True)
def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
