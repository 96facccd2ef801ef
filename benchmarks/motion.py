"""Benchmark: preprocessing + motion correction throughput and peak memory at 512x512.

For each frame count, a simulated Miniscope V4 recording (300 cells, signal level 1.0) is written,
then scopeline's motion stage (core.motion.correct_motion, default parameters, 2 worker threads,
writing the corrected movie to Zarr) runs in a child process whose peak RSS is measured. Optionally
(``--minian VENV``) Minian 2.0.2's preprocessing + motion stage runs on the same recording
(``benchmarks/minian_motion.py``) and the ratio is reported. Before each run the recording's files
are read once, so every run starts with them in the page cache (disk speed is not what is compared);
``--repeat N`` alternates N runs of each tool and reports the medians. Results are appended to
``benchmarks/results/motion.jsonl``.

    python benchmarks/motion.py --frames 2000 8000 20000 --work /tmp/bench-motion [--minian ../minian-venv]
    python benchmarks/motion.py --frames 2000 --minian ../minian-venv --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
import numpy as np, zarr
from scopeline.core import io, motion
from scopeline.core import simulate as sim
from scopeline.pipeline._objects import create_zarr
rec, out = sys.argv[1], sys.argv[2]
meta = io.read_metadata(io.discover(rec)[0])
params = motion.MotionParams()
movie = meta.movie(chunk_frames=params.block_frames)
create = lambda shape, chunks, dtype: create_zarr(out, shape, chunks, dtype)
t = time.perf_counter()
res = motion.correct_motion(movie, params, create, workers=2)
wall = time.perf_counter() - t
gt = sim.load_ground_truth(rec)
d = res.shifts - gt["shifts"]; d -= np.median(d, axis=0)
print(json.dumps({"wall_s": round(wall, 1), "seconds": {k: round(v, 1) for k, v in res.seconds.items()},
                  "rmse_px": round(float(np.sqrt((d ** 2).sum(1).mean())), 3),
                  "peak_rss_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def _warm(folder: Path) -> None:
    """Read the recording's files once, so each tool starts with them in the page cache (the first tool
    to run would otherwise also pay the disk, and the second not)."""
    for f in sorted(folder.iterdir()):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def _scopeline(rec_root: Path, out_zarr: Path) -> dict:
    shutil.rmtree(out_zarr, ignore_errors=True)
    run = subprocess.run([sys.executable, "-c", CHILD, str(rec_root), str(out_zarr)], capture_output=True, text=True)
    shutil.rmtree(out_zarr, ignore_errors=True)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def _minian(venv: Path, device: Path, rec_root: Path, shifts: Path) -> dict:
    import numpy as np

    from scopeline.core import simulate as sim

    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ['PATH']}"}
    run = subprocess.run([str(venv / "bin" / "python"), str(HERE / "minian_motion.py"), str(device),
                          "--shifts", str(shifts)], capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    minian = json.loads(run.stdout.strip().splitlines()[-1])
    gt = sim.load_ground_truth(rec_root)
    d = -np.load(shifts) - gt["shifts"]  # Minian's shifts are the correction: the opposite sign
    d -= np.median(d, axis=0)
    minian["rmse_px"] = round(float(np.sqrt((d ** 2).sum(1).mean())), 3)
    return minian


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[2000, 8000, 20000])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--work", type=Path, default=Path("/tmp/scopeline-bench-motion"))
    ap.add_argument("--minian", type=Path, default=None, help="Minian's virtual environment, to compare")
    ap.add_argument("--minian-frames", type=int, default=2000, help="run Minian on this frame count only")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each tool, alternating; medians reported")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_file = HERE / "results" / "motion.jsonl"
    results_file.parent.mkdir(exist_ok=True)
    for n in args.frames:
        rec_root = args.work / f"sim_{args.size}_{n}"
        if not list(rec_root.glob("*/My_V4_Miniscope/timeStamps.csv")):  # written last: the recording is complete
            shutil.rmtree(rec_root, ignore_errors=True)
            from scopeline.core import simulate as sim

            sim.simulate(rec_root, sim.SimulationParams(height=args.size, width=args.size, n_frames=n,
                                                        n_cells=args.cells, seed=0), progress=True)
        device = next(rec_root.glob("*/My_V4_Miniscope"))
        compare = args.minian is not None and n == args.minian_frames
        ours, theirs = [], []
        for _ in range(args.repeat):
            _warm(device)
            ours.append(_scopeline(rec_root, args.work / f"corrected_{n}.zarr"))
            if compare:
                _warm(device)
                theirs.append(_minian(args.minian.resolve(), device, rec_root, args.work / f"minian_shifts_{n}.npy"))
        walls = sorted(r["wall_s"] for r in ours)
        median = ours[[r["wall_s"] for r in ours].index(walls[len(walls) // 2])]
        result = {"machine": f"{platform.node()} {os.cpu_count()} cores", "frames": n, "size": args.size,
                  "cells": args.cells, "scopeline": median, "frames_per_s": round(n / median["wall_s"], 1)}
        if args.repeat > 1:
            result["scopeline_walls_s"] = [r["wall_s"] for r in ours]
        if compare:
            totals = sorted(r["seconds"]["total"] for r in theirs)
            minian = theirs[[r["seconds"]["total"] for r in theirs].index(totals[len(totals) // 2])]
            result["minian"] = minian
            if args.repeat > 1:
                result["minian_walls_s"] = [r["seconds"]["total"] for r in theirs]
            result["speedup_vs_minian"] = round(minian["seconds"]["total"] / median["wall_s"], 1)
            result["speedup_vs_minian_without_load_and_hw_copy"] = round(
                (minian["seconds"]["total"] - minian["seconds"]["load"] - minian["seconds"]["Y_hw_chk"])
                / median["wall_s"], 1)
        print(json.dumps(result), flush=True)
        with open(results_file, "a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
