"""Benchmark: `scopeline view` on a 1,000-unit, 20,000-frame result: time to first paint and to open a unit.

A simulated V4 recording (512 x 512, 20,000 frames, 1,000 cells by default) is ingested and motion
corrected by the pipeline (its real corrected movie in the store); its initialization and CNMF rows are
the simulator's ground truth (1,000 units with their true footprints, C and S over 20,000 frames),
inserted through the tables' own make_insert, so the view reads a result of the size asked for without
hours of CNMF. The view then runs in this process and headless Chromium (Debian's chromium, Selenium)
opens it:

- first paint: navigation start to the result's image and 1,000 contours drawn (the page's clock);
- open a unit: a click to its C / S / dF/F (20,000 frames each) drawn, for 10 units;
- the API's own times and sizes (result summary, one unit, one movie clip).

Results go to ``benchmarks/results/view.json`` with the machine; ``--screenshot`` saves the page.

    python benchmarks/view.py                          # 512 x 512 x 20,000, 1,000 units
    python benchmarks/view.py --frames 2000 --cells 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script: the suite's machine label
from benchmarks.suite import machine  # noqa: E402


def _fake_heavy_stages(truth: dict, offset) -> None:
    """Initialization and CNMF give the simulator's ground truth (their make_compute replaced), its
    footprints moved by ``offset`` (dy, dx) into the corrected movie's frame."""
    from scipy import ndimage

    import scopeline
    from scopeline.core.footprints import Footprints
    from scopeline.core.quality import METRICS
    from scopeline.pipeline import cnmf, initialization

    A = Footprints.from_dense(np.stack([ndimage.shift(a, offset, order=1) for a in truth["A"]]))
    C, S = truth["C"].astype(np.float32), truth["S"].astype(np.float32)
    n, frames = C.shape
    rng = np.random.default_rng(0)
    sn = np.full(n, 0.05 * float(np.median(C.max(axis=1))), np.float32)

    def init_compute(self, key, movie_ref, fps, shifts, fov, params):
        row = dict(key, n_seeds=n, n_units=n, noise=float(sn[0]), footprints=A.patches, offsets=A.offsets, c_init=C,
                   b=np.zeros(A.shape, np.float32), f=np.zeros(frames, np.float32), seconds={}, compute_time=0.0,
                   scopeline_version=scopeline.__version__)
        return row, []

    def cnmf_compute(self, key, movie_ref, fov, fps, patches, offsets, c_init, b, f, params, init_params):
        yra = C + rng.normal(0, 1, C.shape).astype(np.float32) * sn[:, None]
        metrics = {name: rng.uniform(0, 1, n) for name in METRICS}
        row = dict(key, n_units=n, n_inconsistent=0, b=np.zeros(A.shape, np.float32), f=np.zeros(frames, np.float32),
                   pixel_sn=np.ones(A.shape, np.float32), seconds={}, compute_time=0.0,
                   scopeline_version=scopeline.__version__)
        units = cnmf.unit_rows(key, range(n), A, C, S, yra, np.zeros(n), np.zeros(n), np.full((n, 1), 0.9), sn,
                               C.max(axis=1) / sn, metrics)
        return row, units

    initialization.Initialization.make_compute = init_compute
    cnmf.CNMF.make_compute = cnmf_compute


def prepare(work: Path, size: int, frames: int, cells: int) -> dict:
    """The result in the private database of ``work`` (simulated, ingested, populated once; reused)."""
    from scopeline.core import simulate as sim
    from scopeline.pipeline import activate, cnmf, initialization, motion, presets
    from scopeline.pipeline.ingest import ingest

    rec_dir = work / "rec"
    if not (rec_dir / "ground_truth.zarr").exists():
        t0 = time.perf_counter()
        shutil.rmtree(rec_dir, ignore_errors=True)
        sim.simulate(rec_dir, sim.SimulationParams(height=size, width=size, n_frames=frames, n_cells=cells, seed=0))
        print(f"simulated {size} x {size} x {frames}, {cells} cells in {time.perf_counter() - t0:.0f} s", flush=True)
    activate()
    key = {"subject": "bench", "session": "view", "recording_id": 0}
    from scopeline.pipeline import acquisition

    if not (acquisition.Recording & key):
        ingest(rec_dir, "bench", "view")
    presets.queue([key], presets.stage_paramsets("default"), "cnmf")
    t0 = time.perf_counter()
    motion.MotionCorrection.populate(key, reserve_jobs=True)
    print(f"motion correction: {time.perf_counter() - t0:.0f} s", flush=True)
    truth = sim.load_ground_truth(rec_dir)
    shifts = (motion.MotionCorrection & key).fetch1("shifts")
    _fake_heavy_stages(truth, tuple(-np.median(np.asarray(shifts) - truth["shifts"], axis=0)))
    initialization.Initialization.populate(key, reserve_jobs=True)
    cnmf.CNMF.populate(key, reserve_jobs=True)
    return presets.result_key(key, "default")


def _timed_get(url: str, token: str) -> tuple[float, int]:
    req = urllib.request.Request(url, headers={"X-Scopeline-Token": token})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as reply:
        size = len(reply.read())
    return time.perf_counter() - t0, size


def measure(key: dict, screenshot: Path | None, n_units: int = 10) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from scopeline import view
    from scopeline.view import data

    running = view.start()
    rid = data.result_id(key)
    api = f"{running.base}/api/result/{rid}"
    out: dict = {}
    try:
        t, size = _timed_get(api, running.token)  # the first open reads the rows from the database
        out["api_result_s"], out["api_result_mb"] = round(t, 3), round(size / 1e6, 2)
        t, size = _timed_get(f"{api}/unit/0", running.token)
        out["api_unit_s"], out["api_unit_mb"] = round(t, 3), round(size / 1e6, 2)
        t, size = _timed_get(f"{api}/unit/0/clip", running.token)
        out["api_clip_s"], out["api_clip_mb"] = round(t, 3), round(size / 1e6, 2)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1000",
                    "--enable-unsafe-swiftshader"):
            options.add_argument(arg)
        browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            wait = WebDriverWait(browser, 300)
            browser.get(running.url(rid))
            wait.until(lambda b: b.execute_script("return document.body.dataset.unitShown !== undefined"))
            out["first_paint_s"] = round(browser.execute_script("return window.scopelineView.firstPaint") / 1000, 3)
            out["first_unit_s"] = round(browser.execute_script("return window.scopelineView.unitShown") / 1000, 3)
            ids = browser.execute_script("return window.scopelineView.result.units.map(u => u.unit_id)")
            times = []
            for u in np.random.default_rng(1).choice(ids, size=min(n_units, len(ids)), replace=False):
                browser.execute_script(f'document.querySelector(\'#units tr[data-unit="{int(u)}"]\').click()')
                wait.until(lambda b: b.execute_script("return document.body.dataset.unitShown") == str(int(u)))
                times.append(browser.execute_script("return window.scopelineView.unitShown") / 1000)
            out["open_unit_s"] = {"median": round(float(np.median(times)), 3), "max": round(float(np.max(times)), 3),
                                  "n": len(times)}
            out["n_units_shown"] = len(ids)
            if screenshot is not None:
                time.sleep(2)  # the clip's first frames
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(screenshot))
        finally:
            browser.quit()
    finally:
        running.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scopeline-bench-view")
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "view.json")
    args = ap.parse_args()
    work = args.work / f"{args.size}x{args.frames}x{args.cells}"
    work.mkdir(parents=True, exist_ok=True)
    os.environ["SCOPELINE_HOME"] = str(work / "home")  # a private database and store of its own
    os.environ.pop("DJ_HOST", None)
    subprocess.run([sys.executable, "-m", "scopeline.cli", "db", "up"], check=True)
    key = prepare(work, args.size, args.frames, args.cells)
    res = {"data": {"height": args.size, "width": args.size, "frames": args.frames, "units": args.cells},
           "machine": machine(), **measure(key, args.screenshot)}
    print(json.dumps(res, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
