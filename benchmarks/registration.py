"""Benchmark: cross-session registration (:mod:`scopeline.core.registration`).

- Accuracy on simulated sessions with known identities (:func:`scopeline.core.simulate.session_footprints`:
  5 sessions, 300 cells, rotations up to 5 degrees, shifts up to 20 px, a 1-px non-rigid field, 85%
  presence): alignment errors and pairwise precision / recall of cross-session matches, for 3 seeds.
- End to end on simulated movies (:func:`scopeline.core.simulate.simulate_sessions`: 5 sessions of one
  field of view, 300 cells expected in each frame, 85% presence, shifts up to 20 px, rotations up to 5
  degrees, a 1.5-px non-rigid field): each session through motion correction, initialization and CNMF
  (scopeline's core, defaults), then registration of the sessions' footprints. Each unit is matched to
  its true cell (centroid within 4 px, in the corrected frame); precision and recall are those of the
  cross-session matches among units that found a true cell (a cell CNMF missed is CNMF's, reported
  apart as detection recall), over the separable cells (``precision`` / ``recall``: no other true cell
  within 4 px, 1.3 cell widths, where CNMF sees one blob and a unit takes either cell's id by chance)
  and over all (``precision_all`` / ``recall_all``); alignment errors against the true transforms; the figure
  ``docs/figures/simulated_registration.png``. Skip it with ``--no-movies`` (it takes minutes).
- The real CellReg footprints in ``../shared/data/cellreg_sample_footprints`` (5 sessions, 495-598
  cells): time to read and to register, alignment, cells found in 1..5 sessions, the model's error
  rates; the figure ``docs/figures/cellreg_registration.png``.

Results are appended to ``benchmarks/results/registration.jsonl``.

    python benchmarks/registration.py [--no-movies]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "cellreg_sample_footprints"


def _process(folder: Path, work: Path) -> tuple:
    """One simulated session through scopeline's core (defaults): its footprints and motion shifts."""
    import warnings

    import zarr

    from scopeline.core import cnmf, initialize, io, motion
    from scopeline.pipeline._objects import create_zarr

    meta = io.read_metadata(io.discover(folder)[0])
    store = work / f"{folder.parent.parent.name}.zarr"
    mres = motion.correct_motion(meta.movie(chunk_frames=100), motion.MotionParams(),
                                 lambda s, c, d: create_zarr(store, s, c, d), workers=2)
    movie = zarr.open_array(store, mode="r")
    valid = initialize.valid_region(movie.shape[1:], mres.shifts, fov=mres.fov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        init = initialize.initialize(movie, meta.fps, valid=valid)
        res = cnmf.cnmf(movie, init.A, init.C, init.b, init.f, cnmf.CNMFParams(),
                        diameter=initialize.InitParams().diameter, fps=meta.fps, fov=mres.fov)
    return res.A, np.asarray(mres.shifts, np.float64)


def _pairwise(cells: np.ndarray, truth_ids: list, leave_out: set) -> tuple:
    """Pairwise precision and recall of cross-session matches among units that found a true cell (-1:
    none) not in ``leave_out``."""
    true_pairs, found_pairs = set(), set()
    n = cells.shape[1]
    for a in range(n):
        for b in range(a + 1, n):
            ia = {int(g): i for i, g in enumerate(truth_ids[a]) if g >= 0 and int(g) not in leave_out}
            ib = {int(g): i for i, g in enumerate(truth_ids[b]) if g >= 0 and int(g) not in leave_out}
            true_pairs |= {(a, ia[g], b, ib[g]) for g in set(ia) & set(ib)}
            ua, ub = set(ia.values()), set(ib.values())
            found_pairs |= {(a, int(c[a]), b, int(c[b])) for c in cells if c[a] in ua and c[b] in ub}
    hit = len(true_pairs & found_pairs)
    return round(hit / max(len(found_pairs), 1), 4), round(hit / max(len(true_pairs), 1), 4)


def movies(out: dict, figure: Path) -> None:
    """The end-to-end measurement on simulated movies (see the module)."""
    import math

    from scopeline.core import quality
    from scopeline.core import registration as reg
    from scopeline.core import simulate as sim
    from scopeline.figures import registration_figure

    h = w = 360
    fov_shift, max_rotation, deformation = 20.0, 5.0, 1.5
    margin = fov_shift + 0.5 * math.hypot(h, w) * math.sin(math.radians(max_rotation)) + deformation + 1
    world = (h + math.ceil(2 * margin)) * (w + math.ceil(2 * margin))
    params = sim.SimulationParams(height=h, width=w, n_frames=1000, n_cells=round(300 * world / (h * w)),
                                  max_shift=4.0, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folders = sim.simulate_sessions(Path(tmp) / "days", params, 5, fov_shift=fov_shift, presence=0.85,
                                        max_rotation=max_rotation, deformation=deformation)
        t1 = time.perf_counter()
        footprints, truth_ids, detected, offsets, truths = [], [], [], [], []
        for f in folders:
            A, shifts = _process(f, Path(tmp))
            gt = sim.load_ground_truth(f.parent.parent)
            offset = -np.median(shifts - gt["shifts"], axis=0)  # corrected frame = true frame + offset
            ei, ti = quality.match_units(A.centroids(), gt["centers"] + offset, 4.0)
            ids = np.full(len(A), -1, np.int64)
            ids[ei] = gt["cell_ids"][ti]
            footprints.append(A)
            truth_ids.append(ids)
            detected.append(len(ei) / max(len(gt["cell_ids"]), 1))
            offsets.append(offset)
            truths.append(gt)
            print(f"{f.parent.parent.name}: {len(A)} units, {len(ei)} of {len(gt['cell_ids'])} true cells found",
                  flush=True)
        t2 = time.perf_counter()
        res = reg.register(footprints)
        t3 = time.perf_counter()
    # true cells closer than the match radius to another are one blob to CNMF in a session (a unit between
    # them takes either's id by chance): scored apart
    from scipy.spatial import cKDTree

    world = {int(i): xy for gt in truths for i, xy in zip(gt["cell_ids"], gt["view"].to_world(gt["centers"], (h, w)))}
    ids_all = np.array(sorted(world))
    nearest = cKDTree(np.array([world[i] for i in ids_all])).query(np.array([world[i] for i in ids_all]), 2)[0][:, 1]
    crowded = set(ids_all[nearest < 4.0].tolist())
    strict = _pairwise(res.cells, truth_ids, set())
    separable = _pairwise(res.cells, truth_ids, crowded)
    # the true transform between corrected frames: p0 = R (p - c) + c + t + off_0 - R off_s
    errors_px, errors_deg = [], []
    for s in range(1, 5):
        theta, t = sim.session_alignment(truths[0]["view"], truths[s]["view"])
        R = reg.rotation_matrix(theta)
        true_shift = np.asarray(t) + offsets[0] - R @ offsets[s]
        a = res.alignment[s]
        errors_px.append(float(np.hypot(a.dy - true_shift[0], a.dx - true_shift[1])))
        errors_deg.append(abs(a.rotation - theta))
    out["movies"] = {"sessions": 5, "frame": [h, w], "frames": params.n_frames, "world_cells": params.n_cells,
                     "fov_shift_px": fov_shift, "max_rotation_deg": max_rotation, "deformation_px": deformation,
                     "precision": separable[0], "recall": separable[1],
                     "precision_all": strict[0], "recall_all": strict[1],
                     "crowded_cells": len(crowded), "cells_seen": len(ids_all),
                     "detection_recall": [round(d, 3) for d in detected],
                     "max_shift_error_px": round(max(errors_px), 3), "max_rotation_error_deg": round(max(errors_deg), 3),
                     "simulate_s": round(t1 - t0, 1), "process_s": round(t2 - t1, 1), "register_s": round(t3 - t2, 1),
                     **{k: v for k, v in res.summary().items() if k in ("n_cells", "cells_in_n_sessions", "error_rates")}}
    registration_figure(res, figure, [f"day {s + 1}" for s in range(5)],
                        title="Simulated sessions (5 days, shifts <= 20 px, rotations <= 5 deg, 1.5-px non-rigid field)")
    print("movies", json.dumps(out["movies"]), flush=True)


def main() -> None:
    from scopeline.core import registration as reg
    from scopeline.core.simulate import session_footprints
    from scopeline.figures import registration_figure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-movies", action="store_true", help="leave out the end-to-end run on simulated movies")
    args = ap.parse_args()
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
    if not args.no_movies:
        movies(out, HERE.parent / "docs" / "figures" / "simulated_registration.png")
    with open(HERE / "results" / "registration.jsonl", "a") as fh:
        fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
