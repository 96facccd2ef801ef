"""Benchmark: cross-session registration (:mod:`scopeline.core.registration`).

- Accuracy on simulated sessions with known identities (:func:`scopeline.core.simulate.session_footprints`:
  5 sessions, 300 cells, rotations up to 5 degrees, shifts up to 20 px, a 1-px non-rigid field, 85%
  presence): alignment errors and pairwise precision / recall of cross-session matches, for 3 seeds.
- The real CellReg footprints in ``../shared/data/cellreg_sample_footprints`` (5 sessions, 495-598
  cells): time to read and to register, alignment, cells found in 1..5 sessions, the model's error
  rates; the figure ``docs/figures/cellreg_registration.png``.

Results are appended to ``benchmarks/results/registration.jsonl``.

    python benchmarks/registration.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "cellreg_sample_footprints"


def main() -> None:
    from scopeline.core import registration as reg
    from scopeline.core.simulate import session_footprints
    from scopeline.figures import registration_figure

    out = {"machine": f"{platform.node()} {os.cpu_count()} cores", "simulated": []}
    for seed in range(3):
        sessions, ids, truth = session_footprints(deformation=1.0, seed=seed)
        t0 = time.perf_counter()
        res = reg.register(sessions)
        seconds = time.perf_counter() - t0
        precision, recall = reg.match_scores(res, ids)
        err_px = max(float(np.hypot(a.dy - t[0], a.dx - t[1])) for a, (_, t) in zip(res.alignment, truth))
        err_deg = max(abs(a.rotation - th) for a, (th, _) in zip(res.alignment, truth))
        row = {"seed": seed, "precision": round(precision, 4), "recall": round(recall, 4),
               "max_shift_error_px": round(err_px, 3), "max_rotation_error_deg": round(err_deg, 3),
               "seconds": round(seconds, 2), "error_rates": res.summary()["error_rates"]}
        print("simulated", row, flush=True)
        out["simulated"].append(row)
    files = sorted(DATA.glob("spatial_footprints_0*.mat"))
    if files:
        t0 = time.perf_counter()
        sessions = [reg.read_footprints(f) for f in files]
        t1 = time.perf_counter()
        res = reg.register(sessions)
        t2 = time.perf_counter()
        out["cellreg"] = {"read_s": round(t1 - t0, 1), "register_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
                          **res.summary()}
        registration_figure(res, HERE.parent / "docs" / "figures" / "cellreg_registration.png",
                            [f.stem for f in files], title="CellReg's sample footprints (5 sessions of one mouse)")
        print("cellreg", json.dumps(out["cellreg"]), flush=True)
    with open(HERE / "results" / "registration.jsonl", "a") as fh:
        fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
