"""Benchmark: precision and recall before and after automatic curation (:mod:`scopeline.core.curation`).

A simulated recording (512 x 512, 1,000 frames, 300 cells, signal 1.0; clean and with every artifact of
real recordings) goes through the default chain (``benchmarks/cnmf.py``'s child: motion, initialization,
CNMF with its quality metrics); then each curation preset keeps its accepted units and both sets are
scored against the ground truth with the Minian paper's metrics (cells the lens shows in only some frames
count neither way). Results are appended to ``benchmarks/results/curation.jsonl``.

    python benchmarks/curation.py                      # clean and realistic, presets none/default/strict
    python benchmarks/curation.py --gate-off           # the same with CNMF's own r_value gate off
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _cnmf_bench():
    spec = importlib.util.spec_from_file_location("cnmf_bench", HERE / "cnmf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--artifacts", nargs="+", default=["none", "all"])
    parser.add_argument("--presets", nargs="+", default=["none", "default", "strict"])
    parser.add_argument("--gate-off", action="store_true", help="CNMF keeps every unit (min_r_value -1): what "
                        "curation alone does")
    args = parser.parse_args()
    if args.gate_off:
        os.environ["BENCH_CNMF_MIN_R_VALUE"] = "-1"
    from scopeline.core import curation
    from scopeline.core import simulate as sim
    from scopeline.core.footprints import Footprints

    bench = _cnmf_bench()
    work = Path(tempfile.mkdtemp(prefix="curation_"))
    for art in args.artifacts:
        fields = dict(height=args.size, width=args.size, n_frames=args.frames, n_cells=args.cells, seed=0)
        params = sim.SimulationParams.with_artifacts(list(sim.ARTIFACTS) if art == "all" else [], **fields)
        rec = work / f"rec_{art}"
        device = sim.simulate(rec, params)
        movie, result = work / f"movie_{art}.zarr", work / f"result_{art}.npz"
        subprocess.run([sys.executable, "-c", bench.CHILD, str(device), str(movie), str(result)], check=True,
                       capture_output=True)
        r = dict(np.load(result))
        metrics = {k[len("metrics_"):]: v for k, v in r.items() if k.startswith("metrics_")}
        A = Footprints(r["patches"], r["offsets"], tuple(r["shape"]))
        row = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "size": args.size, "frames": args.frames,
               "cells": args.cells, "artifacts": art, "cnmf_gate": not args.gate_off, "presets": {}}
        for name in args.presets:
            res = curation.curate(metrics, curation.PRESETS[name], A=A, C=r["C"])
            keep = res.accepted
            subset = work / f"result_{art}_{name}.npz"
            np.savez(subset, **{**r, "patches": r["patches"][keep], "offsets": r["offsets"][keep], "C": r["C"][keep],
                                "S": r["S"][keep], **{f"metrics_{k}": v[keep] for k, v in metrics.items()}})
            acc = bench._score(rec, subset, movie, False)["accuracy"]
            reasons = {}
            for text in res.reasons:
                for part in filter(None, text.split("; ")):
                    key = part.split(" ")[0] if not part.startswith(("no accept", "duplicate")) else part.split(" (")[0]
                    key = "duplicate" if key.startswith("duplicate") else key
                    reasons[key] = reasons.get(key, 0) + 1
            row["presets"][name] = {"units": int(keep.sum()), "of": len(keep), "precision": acc["precision"],
                                    "recall": acc["recall"], "f1": acc["f1"], "rejected_by": reasons}
            print(art, name, row["presets"][name], flush=True)
        with open(HERE / "results" / "curation.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
