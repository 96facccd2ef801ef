"""Benchmark: do the per-unit quality metrics separate cells from artifacts?

A realistic simulated recording (every artifact on, :meth:`scopeline.core.simulate.SimulationParams.realistic`)
goes through motion correction, initialization and CNMF with every test that rejects artifacts off
(seeds anywhere in the frame, no row, shape or spatial-consistency test), so that the units include
what artifacts make; each unit is matched to the true
cells (centroid within 5 px, cells the lens shows in only some frames counting neither way), and for
every metric of :data:`scopeline.core.quality.METRICS` the distributions of matched and unmatched
units are drawn and compared by the area under the ROC curve (oriented so that 1 means the metric
ranks every cell above every non-cell). Results go to ``benchmarks/results/quality.jsonl`` and the
figure to ``docs/figures/quality_metrics.png``.

    python benchmarks/quality.py --size 512 --frames 1000 --cells 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import zarr

    from scopeline.core import cnmf, initialize, io, motion, quality
    from scopeline.core import simulate as sim
    from scopeline.core.footprints import ShapeParams
    from scopeline.pipeline._objects import create_zarr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--signal", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/scopeline-bench-quality"))
    ap.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "figures" / "quality_metrics.png")
    args = ap.parse_args()
    rec = args.work / f"realistic_{args.size}_{args.frames}_{args.cells}_{args.signal}_{args.seed}"
    if not list(rec.glob("*/My_V4_Miniscope/timeStamps.csv")):
        shutil.rmtree(rec, ignore_errors=True)
        sim.simulate(rec, sim.SimulationParams.realistic(height=args.size, width=args.size, n_frames=args.frames,
                                                         n_cells=args.cells, signal_level=args.signal,
                                                         seed=args.seed))
    meta = io.read_metadata(io.discover(rec)[0])
    out = args.work / "corrected.zarr"
    shutil.rmtree(out, ignore_errors=True)
    mres = motion.correct_motion(meta.movie(chunk_frames=100), motion.MotionParams(),
                                 lambda s, c, d: create_zarr(str(out), s, c, d), workers=2)
    movie = zarr.open_array(str(out), mode="r")
    no_shape = ShapeParams(max_elongation=0, max_row_elongation=0, min_compactness=0, area_range=(0, 1e9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        init = initialize.initialize(movie, meta.fps, initialize.InitParams(max_row_corr=1, shape=no_shape),
                                     valid=initialize.valid_region(movie.shape[1:], mres.shifts))
        res = cnmf.cnmf(movie, init.A, init.C, init.b, init.f, cnmf.CNMFParams(min_r_value=-1, shape=no_shape),
                        diameter=8, fps=meta.fps, fov=mres.fov)
    gt = sim.load_ground_truth(rec)
    offset = -np.median(mres.shifts - gt["shifts"], axis=0)
    vis = gt["visible_fraction"]
    seen = vis > 0
    ei, ti = quality.match_units(res.A.centroids(), gt["centers"][seen] + offset, 5.0)
    cell = np.zeros(len(res.A), bool)
    cell[ei] = True
    counted = np.ones(len(res.A), bool)
    counted[ei[vis[seen][ti] < 1]] = False
    names = list(quality.METRICS)
    auc = {}
    fig, axes = plt.subplots(3, 3, figsize=(13, 10), constrained_layout=True)
    for ax, name in zip(axes.ravel(), names):
        v = res.metrics[name]
        pos, neg = v[cell & counted], v[~cell & counted]
        a = quality.auc(pos, neg)
        auc[name] = round(a if quality.METRICS[name][1] else 1 - a, 4)
        lo, hi = np.percentile(v, [1, 99]) if len(v) else (0, 1)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        ax.hist(pos, bins=bins, alpha=0.6, label=f"matched to a cell ({len(pos)})", color="tab:green")
        ax.hist(neg, bins=bins, alpha=0.6, label=f"not a cell ({len(neg)})", color="tab:red")
        ax.set_title(f"{name}: AUC {auc[name]:.3f}", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"Unit quality metrics, realistic simulation {args.size}x{args.size}x{args.frames}, {args.cells} "
                 f"cells, signal {args.signal} (no artifact rejection: {len(res.A)} units)", fontsize=11)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=90)
    plt.close(fig)
    result = {"machine": f"{platform.node()} {os.cpu_count()} cores", "size": args.size, "frames": args.frames,
              "cells": args.cells, "signal_level": args.signal, "seed": args.seed, "units": len(res.A),
              "matched": int((cell & counted).sum()), "unmatched": int((~cell & counted).sum()), "auc": auc,
              "r_value_at_least_0.8": {"matched": int((cell & counted & (res.metrics["r_value"] >= 0.8)).sum()),
                                       "unmatched": int((~cell & counted & (res.metrics["r_value"] >= 0.8)).sum())},
              "figure": str(args.figure)}
    print(json.dumps(result))
    with open(HERE / "results" / "quality.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
