"""Viewer benchmark: the browser viewer at ``/viewer`` opening a 300-slice CT stored in S3.

One CT series (N slices of 512x512 16-bit: a chest phantom in HU with noise,
so rendered JPEGs are not trivially small) is sent by storescu to the gateway
storing in SeaweedFS (S3). Debian's Chromium, driven by Playwright, logs in as
a radiologist, searches the worklist by Patient ID and clicks the study's row,
in a fresh browser context with the cache disabled, R times per profile:

- ``loopback``: no emulation;
- ``throttled``: Chromium's network emulation, 10 Mbit/s down and up, 40 ms latency.

Measured from the viewer's own performance marks (``pacsgw:open-study`` on the
click, ``pacsgw:first-image`` when the rendered JPEG is drawn,
``pacsgw:full-fidelity`` when every raw 16-bit frame is loaded):

1. first image: open-study to first-image, ms;
2. full fidelity: open-study to full-fidelity, s;
3. scrolling once loaded: one ``ArrowDown`` keydown (``ArrowUp`` back from the
   end of the stack) dispatched per animation frame for a few seconds; frames
   per second completed and the ms each dispatch took (the key's synchronous
   work: overlay and status text; the viewer paints the slice at the next
   animation frame, so a paint slower than a frame shows as fewer fps), next
   to the idle frame clock of the same page.

Targets (product issue): first image under 500 ms on loopback and under 1.5 s
throttled; scrolling at 60 fps. With ``--ohif`` (the default when the OHIF app
can be had from the npm cache or registry), OHIF v3 served against the same
gateway opens the same study from its study list, and its first image is timed
the same way (click to the first cornerstone render of an image).

Run from the repository root:  ``.venv/bin/python bench/viewer.py [--slices 300] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as ``python bench/viewer.py``: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine  # noqa: E402
from tests.conftest import s3_env  # noqa: E402
from tests.factory import Patient, ct_series, write_files  # noqa: E402
from tests.gateway_process import GatewayProcess  # noqa: E402
from tests.peers.orthanc import DCMTK_ENV, dcmtk_binary  # noqa: E402
from tests.peers.seaweedfs import run_seaweedfs  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 900}
USER, PASSWORD = "dr.bench", "a long enough benchmark password"
PATIENT = Patient(patient_id="MRN-BENCH-VIEWER")
PROFILES: dict[str, dict[str, Any] | None] = {
    "loopback": None,
    "throttled": {"offline": False, "latency": 40, "downloadThroughput": 10e6 / 8, "uploadThroughput": 10e6 / 8},
}
TARGET_FIRST_MS = {"loopback": 500.0, "throttled": 1500.0}
TARGET_FPS = 60.0
# s3_env() shortens these for outage tests; the benchmark keeps the product defaults.
TEST_ONLY_ENV = ("PACSGW_S3_CONNECT_TIMEOUT", "PACSGW_SPOOL_RETRY_MAX_SECONDS")

MARKS_JS = "() => performance.getEntriesByType('mark').map(m => [m.name, m.startTime])"
# What the first image waited for, and how the raw frames arrived (resource timing, ms on the page's clock).
RESOURCES_JS = """() => performance.getEntriesByType('resource').map(r => ({
  url: r.name, start: r.startTime, end: r.responseEnd, size: r.encodedBodySize || r.transferSize || 0 }))"""
IDLE_JS = """(ms) => new Promise((done) => {
  const stamps = [];
  const tick = (now) => { stamps.push(now); if (now - stamps[0] < ms) requestAnimationFrame(tick); else done(stamps); };
  requestAnimationFrame(tick);
})"""
SCROLL_JS = """(ms) => new Promise((done) => {
  const slider = document.getElementById('slice');
  const last = Number(slider.max);
  let key = 'ArrowDown';
  const draws = [], stamps = [];
  const tick = (now) => {
    stamps.push(now);
    const index = Number(slider.value);
    if (index >= last) key = 'ArrowUp';
    else if (index <= 0) key = 'ArrowDown';
    const before = performance.now();
    document.dispatchEvent(new KeyboardEvent('keydown', { key, bubbles: true }));
    draws.push(performance.now() - before);
    if (now - stamps[0] < ms) requestAnimationFrame(tick); else done({ draws, stamps, moved: Number(slider.value) !== index });
  };
  requestAnimationFrame(tick);
})"""
# OHIF: cornerstone3D raises its events on the viewport element without bubbling; a capturing
# listener on the document still sees them. The first IMAGE_RENDERED after a new image is set
# is the first image drawn.
OHIF_INIT_JS = """(() => {
  window.__bench = { newImage: null, rendered: null };
  const seen = (event) => { if (window.__bench.newImage === null) window.__bench.newImage = performance.now(); };
  document.addEventListener('CORNERSTONE_STACK_NEW_IMAGE', seen, true);
  document.addEventListener('CORNERSTONE_VOLUME_NEW_IMAGE', seen, true);
  document.addEventListener('CORNERSTONE_IMAGE_RENDERED', () => {
    if (window.__bench.newImage !== null && window.__bench.rendered === null) window.__bench.rendered = performance.now();
  }, true);
})()"""


# --- the study ------------------------------------------------------------------------------------------------


def phantom(slices: int, size: int, seed: int = 1) -> list[bytes]:
    """A chest-like phantom in HU (air, fat, soft tissue, lungs, heart, aorta, spine, ribs) with noise, stored as HU + 1024."""
    rng = np.random.default_rng(seed)
    y, x = (np.mgrid[:size, :size].astype(np.float32) / (size - 1)) * 2 - 1  # -1..1, y down
    out = []
    for k in range(slices):
        z = k / max(slices - 1, 1)
        lung = 0.25 + 0.75 * np.sin(np.pi * min(1.0, 0.15 + z)) ** 0.5  # lungs grow, then shrink towards the diaphragm
        hu = np.full((size, size), -1000.0, dtype=np.float32)
        body = (x / 0.88) ** 2 + (y / 0.66) ** 2 < 1
        hu[body] = -100  # subcutaneous fat
        hu[(x / 0.82) ** 2 + (y / 0.60) ** 2 < 1] = 40  # soft tissue
        for side in (-1, 1):
            hu[((x - side * 0.38) / (0.27 * lung)) ** 2 + ((y + 0.02) / (0.42 * lung)) ** 2 < 1] = -850
        hu[(x - 0.08) ** 2 + (y + 0.05) ** 2 < (0.18 * (1.1 - z * 0.6)) ** 2] = 45  # heart
        hu[(x + 0.05) ** 2 + (y - 0.28) ** 2 < 0.055**2] = 180  # aorta, contrast-enhanced
        spine = (x**2 + (y - 0.47) ** 2) < 0.09**2
        hu[spine] = 700
        hu[(x**2 + (y - 0.47) ** 2) < 0.06**2] = 250  # cancellous bone
        for angle in np.linspace(0, 2 * np.pi, 14, endpoint=False) + 0.2:
            cx, cy = 0.78 * np.cos(angle), 0.56 * np.sin(angle)
            hu[(x - cx) ** 2 + (y - cy) ** 2 < 0.035**2] = 900  # ribs
        hu += rng.normal(0, 25, (size, size)).astype(np.float32) * np.where(body, 1.0, 0.3).astype(np.float32)
        out.append(np.clip(hu + 1024, 0, 4095).astype(np.uint16).tobytes())
    return out


def study(slices: int):
    series = ct_series(slices, patient=PATIENT, size=512, accession="ACC-VIEWER", study_date="20261129")
    for ds, pixels in zip(series, phantom(slices, 512)):
        ds.PixelData = pixels
        ds.WindowCenter, ds.WindowWidth = 40, 400
    return series


def send(port: int, files: list[Path]) -> None:
    result = subprocess.run(
        [dcmtk_binary("storescu"), "-aet", "BENCH", "-aec", "PACSGW", "127.0.0.1", str(port), *map(str, files)],
        env={**os.environ, **DCMTK_ENV}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"storescu failed: {result.stderr[-500:]}")


# --- one opening in a fresh browser context ---------------------------------------------------------------------


def new_page(browser, profile: str):
    context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)  # the viewer's CSP forbids the eval we need
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    if PROFILES[profile] is not None:
        cdp.send("Network.emulateNetworkConditions", PROFILES[profile])
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script("performance.setResourceTimingBufferSize(5000)")
    return context, page, errors


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def frame_stats(stamps: list[float]) -> dict[str, float]:
    seconds = (stamps[-1] - stamps[0]) / 1000
    intervals = np.diff(stamps)
    return {"fps": (len(stamps) - 1) / seconds, "interval_ms": float(intervals.mean()), "interval_p95_ms": percentile(list(intervals), 95)}


def open_viewer(browser, base: str, profile: str, slices: int, scroll_seconds: float, shot: Path | None) -> dict[str, Any]:
    from playwright.sync_api import expect

    context, page, errors = new_page(browser, profile)
    try:
        page.goto(base + "/viewer")
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.click("#login button[type=submit]")
        page.locator("#search").wait_for()
        page.fill("input[name=PatientID]", PATIENT.patient_id)
        page.click("#search button[type=submit]")
        expect(page.locator("tr.study")).to_have_count(1, timeout=30_000)
        page.locator("tr.study").first.click()
        page.wait_for_function("() => performance.getEntriesByName('pacsgw:first-image').length > 0", timeout=60_000)
        # Throttled, N raw frames of 0.5 MiB take N * 0.42 s at 10 Mbit/s; give them three times that.
        page.wait_for_function(
            "() => performance.getEntriesByName('pacsgw:full-fidelity').length > 0", timeout=120_000 + slices * 1_300, polling=250
        )
        marks = dict(reversed(page.evaluate(MARKS_JS)))  # the first of each name
        missing = [m for m in ("pacsgw:open-study", "pacsgw:first-image", "pacsgw:full-fidelity") if m not in marks]
        if missing:
            raise RuntimeError(f"the viewer set no {missing} mark")
        status = page.locator("#status").inner_text()
        if "Đang tải" in status or "Loading" in status or f"/{slices}" not in status:
            raise RuntimeError(f"full-fidelity mark set but the status line says {status!r}")
        if shot is not None:
            from PIL import Image

            pixels = np.asarray(Image.open(io.BytesIO(page.locator("#viewport").screenshot())).convert("L")).astype(int)
            if pixels.max() - pixels.min() < 100:
                raise RuntimeError("the canvas is blank after loading")
            page.screenshot(path=str(shot))
        opened = marks["pacsgw:open-study"]
        resources = [{**r, "path": r["url"].split("?")[0]} for r in page.evaluate(RESOURCES_JS) if r["start"] >= opened - 1]
        raw = [r for r in resources if "/frames/" in r["path"] and not r["path"].endswith("/rendered")]
        jpegs = [r for r in resources if r["path"].endswith("/rendered")]

        tests = {"series": lambda u: u.endswith("/series"), "metadata": lambda u: u.endswith("/metadata"),
                 "thumbnail": lambda u: u.endswith("/thumbnail"), "rendered": lambda u: u.endswith("/rendered")}  # fmt: skip
        steps = {}
        for name, test in tests.items():
            found = next((r for r in resources if test(r["path"])), None)
            if found:
                steps[name] = {"start_ms": found["start"] - opened, "end_ms": found["end"] - opened, "kib": found["size"] / 1024}
        idle = page.evaluate(IDLE_JS, 1000)
        scroll = page.evaluate(SCROLL_JS, scroll_seconds * 1000)
        if not scroll["moved"]:
            raise RuntimeError("ArrowDown/ArrowUp did not move the slice")
        if errors:
            raise RuntimeError(f"page errors: {errors[:3]}")
        return {
            "first_image_ms": marks["pacsgw:first-image"] - opened,
            "full_fidelity_s": (marks["pacsgw:full-fidelity"] - opened) / 1000,
            "first_image_steps": steps,
            "frames_loaded": len(raw),
            "rendered_loaded": len(jpegs),
            "frames_mib": sum(r["size"] for r in raw) / 2**20,
            "frame_request_ms_median": statistics.median(r["end"] - r["start"] for r in raw) if raw else float("nan"),
            "idle_frame_clock": frame_stats(idle),
            "scroll": {**frame_stats(scroll["stamps"]), "draw_ms_mean": statistics.fmean(scroll["draws"]),
                       "draw_ms_p95": percentile(scroll["draws"], 95), "draws": len(scroll["draws"])},
        }  # fmt: skip
    finally:
        context.close()


# --- OHIF on the same study ---------------------------------------------------------------------------------------


def ohif_first_image(browser, base: str, profile: str, study_uid: str) -> dict[str, Any]:
    """OHIF's study list, the study's row, then its Basic Viewer button: ms from that click to the first image rendered."""
    context, page, errors = new_page(browser, profile)
    page.add_init_script(OHIF_INIT_JS)
    try:
        page.goto(base + "/", wait_until="domcontentloaded")
        row = page.get_by_text(PATIENT.patient_id).first
        row.wait_for(timeout=120_000)
        row.click()  # expands the row: its modes
        button = page.get_by_role("button", name="Basic Viewer").first
        button.wait_for(timeout=60_000)
        clicked = page.evaluate("() => performance.now()")
        button.click()
        page.wait_for_function("() => window.__bench && window.__bench.rendered !== null", timeout=180_000, polling=50)
        bench = page.evaluate("() => window.__bench")
        webgl = page.evaluate("() => !!document.createElement('canvas').getContext('webgl2')")
        return {"first_image_ms": bench["rendered"] - clicked, "webgl2": webgl, "errors": errors[:3]}
    finally:
        context.close()


# --- the run ------------------------------------------------------------------------------------------------------


def median_of(samples: list[dict[str, Any]], *path: str) -> float:
    values = []
    for sample in samples:
        value: Any = sample
        for key in path:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "first_image_ms": median_of(samples, "first_image_ms"),
        "first_image_ms_all": [round(s["first_image_ms"], 1) for s in samples],
        "full_fidelity_s": median_of(samples, "full_fidelity_s"),
        "full_fidelity_s_all": [round(s["full_fidelity_s"], 2) for s in samples],
        "scroll_fps": median_of(samples, "scroll", "fps"),
        "idle_fps": median_of(samples, "idle_frame_clock", "fps"),
        "draw_ms_mean": median_of(samples, "scroll", "draw_ms_mean"),
        "draw_ms_p95": median_of(samples, "scroll", "draw_ms_p95"),
        "metadata_done_ms": median_of(samples, "first_image_steps", "metadata", "end_ms"),
        "metadata_kib": median_of(samples, "first_image_steps", "metadata", "kib"),
        "first_jpeg_request_ms": statistics.median(s["first_image_steps"]["rendered"]["end_ms"] - s["first_image_steps"]["rendered"]["start_ms"] for s in samples),
        "rendered_jpegs_fetched": median_of(samples, "rendered_loaded"),
        "raw_frame_request_ms": median_of(samples, "frame_request_ms_median"),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/viewer.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scroll-seconds", type=float, default=3.0)
    parser.add_argument("--profiles", default="loopback,throttled", help="comma-separated: loopback, throttled")
    parser.add_argument("--ohif", action=argparse.BooleanOptionalAction, default=True, help="also time OHIF's first image (needs npm)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if unknown := set(profiles) - set(PROFILES):
        parser.error(f"unknown profile(s): {sorted(unknown)}")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the servers below are killed on SIGTERM too

    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {}
    ohif: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        series = study(args.slices)
        files = write_files(series, work / "files")
        study_uid = series[0].StudyInstanceUID
        del series
        print(f"study: {args.slices} slices written in {time.perf_counter() - started:.1f} s", flush=True)
        with run_seaweedfs(work / "seaweedfs") as s3:
            env = {k: v for k, v in s3_env(s3, f"bench-{uuid.uuid4().hex[:8]}").items() if k not in TEST_ONLY_ENV}
            gateway = GatewayProcess(work / "gw", env, product_defaults=True)
            try:
                gateway.start()
                gateway.add_user(USER, "radiologist", password=PASSWORD)
                started = time.perf_counter()
                send(gateway.dicom_port, files)
                gateway.wait_idle(timeout=900)
                print(f"stored in S3 in {time.perf_counter() - started:.1f} s", flush=True)
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + trust(gateway), headless=True)
                    try:
                        for profile in profiles:
                            samples = []
                            for repeat in range(args.repeat):
                                sample = open_viewer(browser, gateway.base_url, profile, args.slices, args.scroll_seconds,
                                                     work / f"{profile}.png" if repeat == 0 else None)  # fmt: skip
                                print(f"{profile} #{repeat + 1}: first image {sample['first_image_ms']:.0f} ms, "
                                      f"full fidelity {sample['full_fidelity_s']:.2f} s, scroll {sample['scroll']['fps']:.1f} fps "
                                      f"(idle {sample['idle_frame_clock']['fps']:.1f}), draw {sample['scroll']['draw_ms_mean']:.1f} ms "
                                      f"mean / {sample['scroll']['draw_ms_p95']:.1f} p95", flush=True)  # fmt: skip
                                steps = ", ".join(f"{k} {v['start_ms']:.0f}-{v['end_ms']:.0f} ms ({v['kib']:.0f} KiB)" for k, v in sample["first_image_steps"].items())
                                print(f"    before the first image: {steps}; then {sample['frames_loaded']} raw frames"
                                      f" ({sample['frames_mib']:.0f} MiB, median {sample['frame_request_ms_median']:.0f} ms each),"
                                      f" {sample['rendered_loaded']} rendered JPEGs", flush=True)  # fmt: skip
                                samples.append(sample)
                            results[profile] = summarise(samples)
                        if args.ohif:
                            ohif = run_ohif(browser, work, gateway, study_uid, profiles, args.repeat)
                    finally:
                        browser.close()
            finally:
                gateway.kill()

    report(args, results, ohif)
    return 0


def trust(gateway: GatewayProcess) -> list[str]:
    """Chromium trusts the gateway's trial certificate (the product default, HTTPS), and only it: by its key's pin."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if gateway.ca_file is None:
        return []
    cert = x509.load_pem_x509_certificate((gateway.ca_file.parent / "server.pem").read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return [f"--ignore-certificate-errors-spki-list={base64.b64encode(hashlib.sha256(spki).digest()).decode()}"]


def run_ohif(browser, work: Path, gateway: GatewayProcess, study_uid: str, profiles: list[str], repeat: int) -> dict[str, Any]:
    from tests.peers.ohif import OHIF_VERSION, ohif_dist, serve_ohif

    try:
        dist = ohif_dist(work)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"OHIF skipped: its app could not be had ({exc})", flush=True)
        return {}
    out: dict[str, Any] = {"version": OHIF_VERSION}
    with serve_ohif(dist, gateway.base_url, gateway.token or "", ssl_context=gateway.ssl_context()) as base:
        for profile in profiles:
            samples = []
            for number in range(repeat):
                try:
                    sample = ohif_first_image(browser, base, profile, study_uid)
                except Exception as exc:  # noqa: BLE001 - a peer that cannot be timed is reported, not fatal
                    print(f"OHIF {profile} #{number + 1} failed: {exc!s:.300}", flush=True)
                    continue
                print(f"OHIF {profile} #{number + 1}: first image {sample['first_image_ms']:.0f} ms (WebGL2: {sample['webgl2']})", flush=True)
                samples.append(sample)
            if samples:
                out[profile] = {"first_image_ms": statistics.median(s["first_image_ms"] for s in samples),
                                "first_image_ms_all": [round(s["first_image_ms"], 1) for s in samples]}  # fmt: skip
    return out


def revision() -> str:
    """The commit the viewer was measured at, and whether its files had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "viewer", "gateway"], cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes to viewer/ or gateway/" if dirty else "")


def report(args: argparse.Namespace, results: dict[str, Any], ohif: dict[str, Any]) -> None:
    m = machine()
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    summary = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": m,
        "browser": chromium,
        "revision": revision(),
        "slices": args.slices,
        "repeat": args.repeat,
        "profiles": {p: {k: v for k, v in r.items() if k != "samples"} for p, r in results.items()},
        "ohif": ohif,
    }
    if args.json:
        args.json.write_text(json.dumps({**summary, "samples": {p: r["samples"] for p, r in results.items()}}, indent=2))
    print("\n" + json.dumps(summary, indent=2))
    print(f"\nViewer benchmark, {summary['date']}; {chromium}; revision {summary['revision']}")
    print(f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB RAM, load {m['load_average'][0]:.2f}")
    print(f"Study:   {args.slices} CT slices 512x512 16-bit in S3 (SeaweedFS); median of {args.repeat} fresh contexts, cache disabled\n")
    print(f"{'profile':10} {'first image ms':>15} {'full fidelity s':>16} {'scroll fps':>11} {'idle fps':>9} {'draw ms mean':>13} {'draw ms p95':>12}")
    for profile, r in results.items():
        print(f"{profile:10} {r['first_image_ms']:15.0f} {r['full_fidelity_s']:16.2f} {r['scroll_fps']:11.1f} {r['idle_fps']:9.1f}"
              f" {r['draw_ms_mean']:13.1f} {r['draw_ms_p95']:12.1f}")  # fmt: skip
    print()
    for profile, r in results.items():
        first_ok = r["first_image_ms"] < TARGET_FIRST_MS[profile]
        fps_ok = r["scroll_fps"] >= TARGET_FPS * 0.95  # a 60 Hz frame clock measures 59.x
        line = (f"{profile}: first image under {TARGET_FIRST_MS[profile]:.0f} ms: {'PASS' if first_ok else 'MISS'};"
                f" scrolling at 60 fps: {'PASS' if fps_ok else 'MISS'}")  # fmt: skip
        if profile in ohif:
            line += f"; OHIF {ohif['version']} first image {ohif[profile]['first_image_ms']:.0f} ms ({ohif[profile]['first_image_ms'] / r['first_image_ms']:.2f}x ours)"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
