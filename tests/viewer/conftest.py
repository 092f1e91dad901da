"""One gateway for the viewer tests, with the studies they read, and headless Chromium pages.

The archive holds, all synthetic:
- MRN-0001 (Nguyễn Văn An): a CT phantom of 60 slices, 128x128 at 0.7 mm, a disc of soft tissue (HU 40) on
  air (HU -1000) whose radius is 10 + the slice number, axial orientation; and a prior CT of 2023 (4 slices);
- MRN-XSS: one slice whose PatientName is markup, to prove names are shown as text;
- MRN-US: an ultrasound clip, one instance of 12 frames at a Frame Time of 100 ms (10 frames/s);
- MRN-STEP (Hoàng Văn Minh, ACC-STEP): a CT of two series whose slices are each flat at a level of their own
  (see ``distinct``), to tell from the pixels alone which slice a viewport shows.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import UltrasoundMultiFrameImageStorage

from tests.conftest import storescu
from tests.factory import Patient, ct_series, distinct_slices, write_files

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "a long enough password"
SLICES = 60
US_FRAMES = 12
STEP_SLICES, STEP_OTHER_SLICES = 20, 6


def phantom(slices: int = SLICES) -> list:
    series = ct_series(slices, size=128)
    y, x = np.mgrid[:128, :128]
    for number, ds in enumerate(series, start=1):
        disc = (x - 64) ** 2 + (y - 64) ** 2 < (10 + number) ** 2
        ds.PixelData = np.where(disc, 1064, 24).astype(np.uint16).tobytes()
        ds.WindowCenter, ds.WindowWidth = 40, 400
    return series


def ultrasound_clip() -> list:
    [ds] = ct_series(1, size=64, patient=Patient(patient_id="MRN-US", name="Lê^Thị Hoa", citizen_id="001000000777"),
                     accession="ACC-US", study_date="20240320")  # fmt: skip
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.Modality = "US"
    ds.StudyDescription = "Siêu âm tim"
    ds.SeriesDescription = "Cine"
    for keyword in ("RescaleIntercept", "RescaleSlope", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"):
        delattr(ds, keyword)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = US_FRAMES
    ds.FrameTime = 100.0
    ds.FrameIncrementPointer = 0x00181063
    frames = [np.full((64, 64), 20 * n, dtype=np.uint8) for n in range(US_FRAMES)]  # each frame a different grey
    ds.PixelData = np.stack(frames).tobytes()
    return [ds]


def step_hu(series: int, number: int) -> int:
    """The HU of slice ``number`` (from 1) of series 1 or 2 of the MRN-STEP study."""
    return 15 * number - (150 if series == 1 else 142)


@pytest.fixture(scope="package")
def distinct() -> tuple[list, list]:
    """The MRN-STEP study's two series: 20 slices at HU 15n - 150, and 6 at HU 15n - 142."""
    patient = Patient(patient_id="MRN-STEP", name="Hoàng^Văn Minh", citizen_id="001000000555")
    first = distinct_slices(STEP_SLICES, patient=patient, accession="ACC-STEP", study_date="20240401", size=64)
    second = distinct_slices(STEP_OTHER_SLICES, first_hu=step_hu(2, 1), patient=patient, accession="ACC-STEP",
                             study_date="20240401", size=64, study_uid=first[0].StudyInstanceUID)  # fmt: skip
    for ds in second:
        ds.SeriesNumber, ds.SeriesDescription = 2, "Axial 2mm"
    return first, second


@pytest.fixture(scope="package")
def archive(tmp_path_factory: pytest.TempPathFactory, distinct: tuple[list, list]):
    from tests.gateway_process import GatewayProcess

    tmp = tmp_path_factory.mktemp("viewer")
    gateway = GatewayProcess(tmp / "gw", {})
    gateway.start()
    gateway.add_user("dr.lan", "radiologist", password=PASSWORD)
    series = phantom()
    prior = ct_series(4, size=128, accession="ACC-2023", study_date="20230110", seed=3)
    hostile = ct_series(1, size=32, accession="ACC-XSS",
                        patient=Patient(patient_id="MRN-XSS", name="<img src=x onerror=alert(1)>", citizen_id="001000000999"))
    files = write_files(series + prior + hostile + ultrasound_clip() + distinct[0] + distinct[1], tmp / "files")
    assert storescu(gateway.dicom_port, files).returncode == 0
    gateway.wait_idle()
    yield gateway, series
    gateway.kill()


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where a test saves its screenshots, kept after the run (``test-artifacts/viewer/<test>/``, not in git)."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def new_page(browser, **options):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, **options)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    return page


@pytest.fixture
def page(browser):
    return new_page(browser)


def canvas_pixels(page, selector: str = "#viewport") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("L")).astype(int)


def log_in(page, base: str, username: str = "dr.lan", password: str = PASSWORD) -> None:
    page.goto(base + "/viewer")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("#login button[type=submit]")


def open_study(page, accession: str, *, loaded: bool = True) -> None:
    """From the worklist, the study of an accession number, waiting for its full-fidelity pixels."""
    import re

    from playwright.sync_api import expect

    page.locator("#search").wait_for()
    page.fill("input[name=AccessionNumber]", accession)
    page.click("#search button[type=submit]")
    expect(page.locator("tr.study")).to_have_count(1)
    page.locator("tr.study").first.click()
    expect(page.locator("#status")).to_contain_text("/")
    if loaded:
        expect(page.locator("#status")).not_to_contain_text(re.compile("Đang tải|Loading"), timeout=60_000)
