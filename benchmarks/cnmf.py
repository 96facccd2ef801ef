"""Benchmark: accuracy, per-stage time and peak memory of motion + initialization + CNMF.

For each signal level, cell count and frame count, a simulated Miniscope V4 recording is written,
then scopeline's core runs in a child process (motion correction to Zarr, initialization, CNMF, with
default parameters; peak RSS measured), and its units are scored against the ground truth with the
Minian paper's metrics (:mod:`scopeline.core.quality`). ``--oracle`` also scores the traces that the
true footprints give on the same corrected movie (the best any footprint estimate can do there).
``--minian VENV`` runs Minian 2.0.2's whole pipeline (``../shared/anchors/run_minian.py``) on the same
recording and scores it the same way. Results are appended to ``benchmarks/results/cnmf.jsonl``.

    python benchmarks/cnmf.py --signal 0.2 0.4 0.6 1.0 1.4 1.8 --cells 100 300 --frames 1000
    python benchmarks/cnmf.py --signal 1.0 --cells 300 --frames 2000 8000 20000     # time and memory
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
import json, resource, sys, time, warnings
import numpy as np, zarr
from scopeline.core import io, motion, initialize, cnmf, quality
from scopeline.core import simulate as sim
from scopeline.pipeline._objects import create_zarr
rec, out, oracle = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
meta = io.read_metadata(io.discover(rec)[0])
seconds = {}
t = time.perf_counter()
mres = motion.correct_motion(meta.movie(chunk_frames=100), motion.MotionParams(),
                             lambda s, c, d: create_zarr(out, s, c, d), workers=2)
seconds["motion"] = time.perf_counter() - t
movie = zarr.open_array(out, mode="r")
t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    init = initialize.initialize(movie, meta.fps, valid=initialize.valid_region(movie.shape[1:], mres.shifts))
    seconds["initialization"] = time.perf_counter() - t
    t = time.perf_counter()
    res = cnmf.cnmf(movie, init.A, init.C, init.b, init.f)
seconds["cnmf"] = time.perf_counter() - t
seconds.update({f"cnmf_{k}": v for k, v in res.seconds.items()})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gt = sim.load_ground_truth(rec)
offset = tuple(-np.median(mres.shifts - gt["shifts"], axis=0))
acc = quality.accuracy(res.A.dense(), res.C, res.S, gt["A"], gt["C"], gt["S"], offset=offset)
out_ = {"seconds": {k: round(v, 1) for k, v in seconds.items()}, "wall_s": round(sum(seconds[k] for k in
        ("motion", "initialization", "cnmf")), 1), "peak_rss_MiB": round(peak), "units": len(res.A),
        "accuracy": acc.as_dict()}
if oracle:
    from scipy import ndimage
    A = np.stack([ndimage.shift(a, offset, order=1) for a in gt["A"]]).reshape(len(gt["A"]), -1)
    G = A @ A.T
    AY = np.concatenate([A @ np.asarray(movie[a:a + 200], np.float32).reshape(-1, A.shape[1]).T
                         for a in range(0, movie.shape[0], 200)], axis=1)
    coef = np.linalg.solve(G + 1e-6 * np.eye(len(G)), AY)
    out_["oracle_trace_corr"] = round(float(np.median(quality._corr_rows(coef, gt["C"].astype(float)))), 4)
print(json.dumps(out_))
"""


def _minian(venv: Path, device: Path, work: Path, rec_root: Path) -> dict:
    """Run Minian's pipeline on the recording and score it like ours."""
    import numpy as np

    from scopeline.core import quality
    from scopeline.core import simulate as sim

    out = work / "minian_result.npz"
    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ['PATH']}"}
    runner = HERE.parent.parent / "shared" / "anchors" / "run_minian.py"
    run = subprocess.run([str(venv / "bin" / "python"), str(runner), str(device), "--out", str(out),
                          "--cell-radius", "8", "--n-workers", "2", "--memory-limit", "4GB"],
                         capture_output=True, text=True, env=env, cwd=work)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    summary = json.loads(out.with_suffix(".json").read_text())
    r = np.load(out)
    gt = sim.load_ground_truth(rec_root)
    est = -r["shifts"]  # Minian's shifts are the correction: the opposite sign of ours
    offset = tuple(-np.median(est - gt["shifts"], axis=0))
    acc = quality.accuracy(r["A"], r["C"], r["S"], gt["A"], gt["C"], gt["S"], offset=offset)
    shutil.rmtree(work / "minian_result_intermediate", ignore_errors=True)
    return {"summary": summary, "units": int(len(r["A"])), "accuracy": acc.as_dict()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--signal", type=float, nargs="+", default=[1.0])
    ap.add_argument("--cells", type=int, nargs="+", default=[300])
    ap.add_argument("--frames", type=int, nargs="+", default=[1000])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--oracle", action="store_true", help="also score the true footprints' traces")
    ap.add_argument("--work", type=Path, default=Path("/tmp/scopeline-bench-cnmf"))
    ap.add_argument("--minian", type=Path, default=None, help="Minian's virtual environment, to compare")
    ap.add_argument("--keep", action="store_true", help="keep the simulated recordings")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_file = HERE / "results" / "cnmf.jsonl"
    results_file.parent.mkdir(exist_ok=True)
    for n in args.frames:
        for cells in args.cells:
            for level in args.signal:
                rec_root = args.work / f"sim_{args.size}_{n}_{cells}_{level}_{args.seed}"
                if not list(rec_root.glob("*/My_V4_Miniscope/timeStamps.csv")):
                    shutil.rmtree(rec_root, ignore_errors=True)
                    from scopeline.core import simulate as sim

                    sim.simulate(rec_root, sim.SimulationParams(height=args.size, width=args.size, n_frames=n,
                                                                n_cells=cells, signal_level=level, seed=args.seed))
                out_zarr = args.work / "corrected.zarr"
                shutil.rmtree(out_zarr, ignore_errors=True)
                run = subprocess.run([sys.executable, "-c", CHILD, str(rec_root), str(out_zarr),
                                      "1" if args.oracle else "0"], capture_output=True, text=True)
                if run.returncode:
                    raise SystemExit(run.stderr[-3000:])
                ours = json.loads(run.stdout.strip().splitlines()[-1])
                result = {"machine": f"{platform.node()} {os.cpu_count()} cores", "size": args.size, "frames": n,
                          "cells": cells, "signal_level": level, "seed": args.seed, "scopeline": ours}
                shutil.rmtree(out_zarr, ignore_errors=True)
                if args.minian is not None:
                    device = next(rec_root.glob("*/My_V4_Miniscope"))
                    result["minian"] = _minian(args.minian.resolve(), device, args.work, rec_root)
                    result["speedup_vs_minian"] = round(
                        result["minian"]["summary"].get("total_wall_s", float("nan")) / ours["wall_s"], 1)
                print(json.dumps(result), flush=True)
                with open(results_file, "a") as fh:
                    fh.write(json.dumps(result) + "\n")
                if not args.keep:
                    shutil.rmtree(rec_root, ignore_errors=True)


if __name__ == "__main__":
    main()
