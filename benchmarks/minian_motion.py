"""Minian 2.0.2's preprocessing + motion stage alone, timed, for side-by-side comparison.

Runs in Minian's own virtual environment (see ../shared/anchors/install_minian.sh), never in
scopeline's. The calls and parameters are those of Minian's pipeline notebook (as in the shared
headless runner): load videos, glow removal + median denoise (7) + top-hat (15), estimate_motion,
apply_transform, saving varr_ref, motion, Y_fm_chk and Y_hw_chk. Prints one JSON line: wall time per
stage, peak RSS of the process tree, estimated shifts saved to --shifts (.npy).

    V=../minian-venv; PATH=$V/bin:$PATH $V/bin/python benchmarks/minian_motion.py DEVICE_FOLDER \
        --shifts minian_shifts.npy --n-workers 2 --memory-limit 4GB
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time

import numpy as np
import psutil


class PeakRSS(threading.Thread):
    """Peak resident memory of this process and its children, sampled every 0.5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.running = True

    def run(self):
        me = psutil.Process()
        while self.running:
            try:
                procs = [me, *me.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vpath")
    ap.add_argument("--shifts", required=True)
    ap.add_argument("--n-workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GB")
    args = ap.parse_args()
    mem = PeakRSS()
    mem.start()
    times = {}
    t_all = time.perf_counter()
    import dask
    from dask.distributed import Client, LocalCluster
    from minian.motion_correction import apply_transform, estimate_motion
    from minian.preprocessing import denoise, remove_background
    from minian.utilities import get_optimal_chk, load_videos, save_minian

    dask.config.set({"distributed.worker.memory.terminate": False})
    cluster = LocalCluster(n_workers=args.n_workers, memory_limit=args.memory_limit, resources={"MEM": 1},
                           threads_per_worker=2, dashboard_address=None)
    client = Client(cluster)
    intpath = tempfile.mkdtemp(prefix="minian_motion_")
    try:
        t = time.perf_counter()
        varr = load_videos(args.vpath, pattern=r"[0-9]+\.avi$", dtype=np.uint8,
                           downsample={"frame": 1, "height": 1, "width": 1}, downsample_strategy="subset")
        chk, _ = get_optimal_chk(varr, dtype=float)
        varr = save_minian(varr.chunk({"frame": chk["frame"], "height": -1, "width": -1}).rename("varr"),
                           intpath, overwrite=True)
        times["load"] = time.perf_counter() - t
        t = time.perf_counter()
        varr_ref = varr - varr.min("frame").compute()
        varr_ref = denoise(varr_ref, method="median", ksize=7)
        varr_ref = remove_background(varr_ref, method="tophat", wnd=15)
        varr_ref = save_minian(varr_ref.rename("varr_ref"), intpath, overwrite=True)
        times["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        motion = estimate_motion(varr_ref, dim="frame")
        motion = save_minian(motion.rename("motion").chunk({"frame": chk["frame"]}), intpath, overwrite=True)
        times["estimate_motion"] = time.perf_counter() - t
        t = time.perf_counter()
        Y = apply_transform(varr_ref, motion, fill=0)
        Y_fm = save_minian(Y.astype(np.float32).rename("Y_fm_chk"), intpath, overwrite=True)
        times["apply_transform"] = time.perf_counter() - t
        t = time.perf_counter()
        save_minian(Y_fm.rename("Y_hw_chk"), intpath, overwrite=True, mem_limit="1GB",
                    chunks={"frame": -1, "height": chk["height"], "width": chk["width"]})
        times["Y_hw_chk"] = time.perf_counter() - t
        np.save(args.shifts, motion.values)
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(intpath, ignore_errors=True)
    mem.running = False
    times["total"] = time.perf_counter() - t_all
    print(json.dumps({"seconds": {k: round(v, 1) for k, v in times.items()}, "peak_rss_MiB": round(mem.peak / 2**20)}))


if __name__ == "__main__":
    main()
