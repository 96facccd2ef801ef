"""Benchmark: initialization and CNMF with 1 vs 2 workers (:mod:`scopeline.executor`) on one corrected movie.

A simulated V4 recording (512 x 512, 2,000 frames, 300 cells by default) is motion-corrected once; then
initialization and CNMF run on the stored movie with each worker count, each in a fresh child process
(so that no run profits from another's page cache or compiled kernels more than the first), and the
results are compared: the same units, footprints and traces whatever the count. Results are appended
to ``benchmarks/results/workers.jsonl``.

    python benchmarks/workers.py                       # 512 x 512 x 2,000, workers 1 and 2
    python benchmarks/workers.py --frames 1000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

PREPARE = r"""
import sys, numpy as np
from scopeline.core import io, motion, simulate as sim
from scopeline.pipeline._objects import create_zarr
work, size, frames, cells = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sim.simulate(work + "/rec", sim.SimulationParams(height=size, width=size, n_frames=frames, n_cells=cells, seed=0))
meta = io.read_metadata(io.discover(work + "/rec")[0])
res = motion.correct_motion(meta.movie(chunk_frames=100), motion.MotionParams(),
                            lambda s, c, d: create_zarr(work + "/movie.zarr", s, c, d))
np.savez(work + "/motion.npz", shifts=res.shifts, fov=res.fov, fps=meta.fps)
"""

CHILD = r"""
import json, sys, time, warnings, numpy as np, zarr
from scopeline.core import cnmf, initialize
work, workers = sys.argv[1], int(sys.argv[2])
m = np.load(work + "/motion.npz")
movie = zarr.open_array(work + "/movie.zarr", mode="r")
warnings.simplefilter("ignore", RuntimeWarning)
t = time.perf_counter()
init = initialize.initialize(movie, float(m["fps"]), valid=initialize.valid_region(movie.shape[1:], m["shifts"],
                             fov=m["fov"]), workers=workers)
t_init = time.perf_counter() - t
t = time.perf_counter()
res = cnmf.cnmf(movie, init.A, init.C, init.b, init.f, diameter=initialize.InitParams().diameter,
                fps=float(m["fps"]), fov=m["fov"], workers=workers)
t_cnmf = time.perf_counter() - t
np.savez(f"{work}/result_{workers}.npz", A=res.A.dense(), C=res.C, S=res.S)
print(json.dumps({"initialization_s": round(t_init, 2), "cnmf_s": round(t_cnmf, 2), "units": len(res.A),
                  "init_steps": {k: round(v, 2) for k, v in init.seconds.items()},
                  "cnmf_steps": {k: round(v, 2) for k, v in res.seconds.items()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=None, help="reuse a folder PREPARE wrote")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="workers_"))
    if not (work / "motion.npz").exists():
        subprocess.run([sys.executable, "-c", PREPARE, str(work), str(args.size), str(args.frames), str(args.cells)],
                       check=True)
    runs = {}
    for n in args.workers:
        out = subprocess.run([sys.executable, "-c", CHILD, str(work), str(n)], check=True, capture_output=True,
                             text=True)
        runs[n] = json.loads(out.stdout.strip().splitlines()[-1])
        print(n, runs[n], flush=True)
    first = np.load(work / f"result_{args.workers[0]}.npz")
    row = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "size": args.size, "frames": args.frames,
           "cells": args.cells, "runs": {str(k): v for k, v in runs.items()}}
    for n in args.workers[1:]:
        other = np.load(work / f"result_{n}.npz")
        same = first["C"].shape == other["C"].shape
        row[f"identical_{n}"] = bool(same and all(np.array_equal(first[k], other[k]) for k in ("A", "C", "S")))
        base = runs[args.workers[0]]
        row[f"speedup_{n}"] = {k: round(base[k] / runs[n][k], 2) for k in ("initialization_s", "cnmf_s")}
    print(json.dumps(row))
    with open(HERE / "results" / "workers.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
