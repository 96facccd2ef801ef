"""Benchmark: accuracy, per-stage time and peak memory of motion + initialization + CNMF.

For each signal level, cell count and frame count, a simulated Miniscope V4 recording is written,
then scopeline's core runs in a child process (motion correction to Zarr, initialization, CNMF, with
default parameters; peak RSS measured), and its units are scored against the ground truth with the
Minian paper's metrics (:mod:`scopeline.core.quality`). ``--oracle`` also scores the traces that the
true footprints give on the same corrected movie (the best any footprint estimate can do there).
``--minian VENV`` runs Minian 2.0.2's whole pipeline (``../shared/anchors/run_minian.py``) on the same
recording and scores it the same way. The child saves its result and this process scores it, so
``--src`` can run an older scopeline on the same recording. Results are appended to ``benchmarks/results/cnmf.jsonl``.

    python benchmarks/cnmf.py --signal 0.2 0.4 0.6 1.0 1.4 1.8 --cells 100 300 --frames 1000
    python benchmarks/cnmf.py --signal 1.0 --cells 300 --frames 2000 8000 20000     # time and memory
    python benchmarks/cnmf.py --artifacts none all line_noise lens ...               # real-data artifacts
    python benchmarks/cnmf.py --artifacts all --src /tmp/old-checkout                # an older tree, scored here

``--artifacts`` simulates with :meth:`scopeline.core.simulate.SimulationParams.realistic` (``all``) or one
artifact of :data:`scopeline.core.simulate.ARTIFACTS` alone; cells that the lens shows in only some frames
count neither way, and shift RMSE is over every frame, the first ones included.
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
import json, sys, time, warnings
import numpy as np, zarr
from scopeline.core import io, motion, initialize, cnmf
from scopeline.pipeline._objects import create_zarr
rec, out, result = sys.argv[1], sys.argv[2], sys.argv[3]
meta = io.read_metadata(io.discover(rec)[0])
seconds = {}
t = time.perf_counter()
mres = motion.correct_motion(meta.movie(chunk_frames=100), motion.MotionParams(),
                             lambda s, c, d: create_zarr(out, s, c, d), workers=2)
seconds["motion"] = time.perf_counter() - t
movie = zarr.open_array(out, mode="r")
t = time.perf_counter()
fov = getattr(mres, "fov", None)  # scopeline before its field-of-view mask (the --src of an older tree) has none
valid = initialize.valid_region(movie.shape[1:], mres.shifts, **({"fov": fov} if fov is not None else {}))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    import os
    tuned = json.loads(os.environ.get("BENCH_INIT_PARAMS", "{}"))  # a parameter study: initialization fields
    init = initialize.initialize(movie, meta.fps, initialize.InitParams(**tuned), valid=valid) if tuned else \
        initialize.initialize(movie, meta.fps, valid=valid)
    seconds["initialization"] = time.perf_counter() - t
    t = time.perf_counter()
    import inspect
    known = inspect.signature(cnmf.cnmf).parameters  # an older --src tree's cnmf may not take them
    extra = {"diameter": initialize.InitParams().diameter, "fps": meta.fps, "fov": fov}
    import os
    gate = os.environ.get("BENCH_CNMF_MIN_R_VALUE")  # benchmarks/curation.py --gate-off: CNMF keeps every unit
    p = cnmf.CNMFParams(**({"min_r_value": float(gate)} if gate else {}))
    res = cnmf.cnmf(movie, init.A, init.C, init.b, init.f, p, **{k: v for k, v in extra.items() if k in known})
seconds["cnmf"] = time.perf_counter() - t
seconds.update({f"cnmf_{k}": v for k, v in res.seconds.items()})
metrics = getattr(res, "metrics", None) or {}
# this process's own high-water mark (ru_maxrss would carry the parent's over from fork)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
extra = {"metrics_" + k: v for k, v in metrics.items()}
np.savez(result, patches=res.A.patches, offsets=res.A.offsets, shape=np.array(res.A.shape), C=res.C, S=res.S,
         shifts=mres.shifts, fov=fov if fov is not None else np.ones(movie.shape[1:], bool), **extra)
print(json.dumps({"seconds": {k: round(v, 1) for k, v in seconds.items()}, "peak_rss_MiB": round(peak),
                  "units": len(res.A)}))
"""


def _score(rec_root: Path, result: Path, movie_path: Path, oracle: bool) -> dict:
    """Score a child's result (npz) against the ground truth: accuracy (cells seen through the lens in
    only some frames count neither way), shift RMSE over every frame, and optionally the oracle."""
    import numpy as np
    import zarr

    from scopeline.core import quality
    from scopeline.core import simulate as sim
    from scopeline.core.footprints import Footprints

    gt = sim.load_ground_truth(rec_root)
    r = np.load(result)
    A = Footprints(r["patches"], r["offsets"], tuple(r["shape"]))
    offset = tuple(-np.median(r["shifts"] - gt["shifts"], axis=0))
    vis = gt["visible_fraction"]
    partial = (vis > 0) & (vis < 1)
    seen = vis > 0
    acc = quality.accuracy(A.dense(), r["C"], r["S"], gt["A"][seen], gt["C"][seen], gt["S"][seen], offset=offset,
                           ignore=partial[seen])
    err = r["shifts"] - gt["shifts"] + np.asarray(offset)[None]
    names = [k[len("metrics_"):] for k in r.files if k.startswith("metrics_")]
    if names and len(A):
        from scipy import ndimage as ndi

        true_xy = quality.centroids(np.stack([ndi.shift(a, offset, order=1) for a in gt["A"][seen]]))
        ei, ti = quality.match_units(A.centroids(), true_xy, 5.0)
        matched = np.zeros(len(A), bool)
        matched[ei] = True
        counted = np.ones(len(A), bool)
        counted[ei[partial[seen][ti]]] = False  # matched to a cell the lens shows only sometimes
        auc = {}
        for name in names:
            v = r["metrics_" + name]
            a = quality.auc(v[matched & counted], v[~matched & counted])
            auc[name] = round(a if quality.METRICS[name][1] else 1 - a, 4)
        out_metrics = {"auc": auc, "matched": int((matched & counted).sum()), "unmatched": int((~matched & counted).sum())}
    else:
        out_metrics = None
    out = {"accuracy": acc.as_dict(), "n_visible": int((vis == 1).sum()),
           "shift_rmse_px": round(float(np.sqrt((err**2).sum(axis=1).mean())), 4),
           "shift_rmse_first_100_px": round(float(np.sqrt((err[:100] ** 2).sum(axis=1).mean())), 4),
           "shift_max_error_px": round(float(np.abs(err).max()), 3), "metrics": out_metrics}
    if oracle:
        from scipy import ndimage

        movie = zarr.open_array(str(movie_path), mode="r")
        At = np.stack([ndimage.shift(a, offset, order=1) for a in gt["A"][seen]]).reshape(int(seen.sum()), -1)
        G = At @ At.T
        AY = np.concatenate([At @ np.asarray(movie[a:a + 200], np.float32).reshape(-1, At.shape[1]).T
                             for a in range(0, movie.shape[0], 200)], axis=1)
        coef = np.linalg.solve(G + 1e-6 * np.eye(len(G)), AY)
        keep = ~partial[seen]
        out["oracle_trace_corr"] = round(float(np.median(quality._corr_rows(coef[keep], gt["C"][seen][keep].astype(float)))), 4)
    return out


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


def _artifact_names(spec: str, known) -> list[str]:
    """``none``, ``all``, ``all-NAME`` (every artifact but one) or ``NAME+NAME...`` as artifact names."""
    if spec == "none":
        return []
    if spec == "all" or spec.startswith("all-"):
        return [n for n in known if n not in spec.split("-")[1:]]
    return spec.split("+")


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
    ap.add_argument("--artifacts", nargs="+", default=["none"],
                    help="recordings to simulate: 'none' (clean), 'all' (SimulationParams.realistic), 'all-NAME' "
                         "(all but one), or artifact names (core.simulate.ARTIFACTS) alone or joined by '+'; "
                         "several give several runs")
    ap.add_argument("--src", type=Path, default=None,
                    help="run another scopeline source tree's core (e.g. a checkout before a change), "
                         "scored by this one")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_file = HERE / "results" / "cnmf.jsonl"
    results_file.parent.mkdir(exist_ok=True)
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve() / "src")
    for n in args.frames:
        for cells in args.cells:
            for level in args.signal:
                for artifacts in args.artifacts:
                    result = run_one(args.size, n, cells, level, artifacts, args.seed, args.work, env=env,
                                     oracle=args.oracle, minian=args.minian, keep=args.keep,
                                     src=str(args.src) if args.src else "this tree")
                    print(json.dumps(result), flush=True)
                    with open(results_file, "a") as fh:
                        fh.write(json.dumps(result) + "\n")


def run_one(size: int, n: int, cells: int, level: float, artifacts: str, seed: int, work: Path, *, env=None,
            oracle: bool = False, minian: Path | None = None, keep: bool = False, src: str = "this tree",
            sample_s: float = 0.5, bounds: bool = False) -> dict:
    """Simulate one recording (reused when its folder exists), run the child on it (peak memory of its
    process tree sampled every ``sample_s`` s besides its own high-water mark) and score it."""
    from scopeline.core import simulate as sim

    env = dict(os.environ) if env is None else env
    base = dict(height=size, width=size, n_frames=n, n_cells=cells, signal_level=level, seed=seed)
    params = sim.SimulationParams.with_artifacts(_artifact_names(artifacts, sim.ARTIFACTS), **base)
    tag = "" if artifacts == "none" else f"_{artifacts}"
    rec_root = work / f"sim_{size}_{n}_{cells}_{level}_{seed}{tag}"
    if not list(rec_root.glob("*/My_V4_Miniscope/timeStamps.csv")):
        shutil.rmtree(rec_root, ignore_errors=True)
        sim.simulate(rec_root, params)
    out_zarr = work / "corrected.zarr"
    npz = work / "result.npz"
    shutil.rmtree(out_zarr, ignore_errors=True)
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(rec_root), str(out_zarr), str(npz)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    tree_peak = sample_tree_rss(proc, sample_s)
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise SystemExit(stderr[-3000:])
    ours = json.loads(stdout.strip().splitlines()[-1])
    ours["peak_tree_rss_MiB"] = round(tree_peak)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
    ours["wall_s"] = round(sum(ours["seconds"][k] for k in ("motion", "initialization", "cnmf")), 1)
    ours.update(_score(rec_root, npz, out_zarr, oracle))
    if bounds:
        ours["bound"] = physical_bound(rec_root, out_zarr)
    result = {"machine": f"{platform.node()} {os.cpu_count()} cores", "size": size,
              "frames": n, "cells": cells, "signal_level": level, "seed": seed,
              "artifacts": artifacts, "src": src,
              **({"init_params": json.loads(env["BENCH_INIT_PARAMS"])}
                 if env.get("BENCH_INIT_PARAMS") else {}),
              "scopeline": ours}
    shutil.rmtree(out_zarr, ignore_errors=True)
    if minian is not None:
        device = next(rec_root.glob("*/My_V4_Miniscope"))
        result["minian"] = _minian(minian.resolve(), device, work, rec_root)
        result["speedup_vs_minian"] = round(
            result["minian"]["summary"].get("total_wall_s", float("nan")) / ours["wall_s"], 1)
    if not keep:
        shutil.rmtree(rec_root, ignore_errors=True)
    return result


def physical_bound(rec_root: Path, movie_path: Path) -> dict:
    """What no pipeline on this machine beats: one decode pass of the recording's files (scopeline's
    reader, dask threads, a max projection) and one read of the stored corrected movie (Zarr), frames/s."""
    import time

    import numpy as np
    import zarr

    from scopeline.core import io

    meta = io.read_metadata(io.discover(rec_root)[0])
    t = time.perf_counter()
    meta.movie(chunk_frames=100).max(axis=0).compute()
    decode = time.perf_counter() - t
    movie = zarr.open_array(str(movie_path), mode="r")
    t = time.perf_counter()
    for a in range(0, movie.shape[0], 100):
        np.asarray(movie[a:a + 100])
    read = time.perf_counter() - t
    n = movie.shape[0]
    return {"decode_fps": round(meta.n_frames / decode, 1), "store_read_fps": round(n / read, 1)}


def sample_tree_rss(proc, every: float = 0.5, timeline: list | None = None, label=None) -> float:
    """Peak resident memory (MiB) of ``proc`` and all its descendants, summed, sampled every ``every`` s
    until it exits (/proc; threads share their process's memory). With ``timeline`` (a list), every
    sample is appended to it as ``(seconds since the first sample, MiB, label())`` (``label``: a callable
    naming what runs, e.g. the stage; None gives "")."""
    import time

    peak, t0 = 0.0, time.perf_counter()
    while proc.poll() is None:
        pids, frontier = set(), [proc.pid]
        while frontier:
            pid = frontier.pop()
            pids.add(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    frontier += [int(c) for c in (task / "children").read_text().split() if int(c) not in pids]
            except OSError:
                continue
        total = 0
        for pid in pids:
            try:
                total += next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS"))
            except (OSError, StopIteration):
                pass
        peak = max(peak, total / 1024)
        if timeline is not None:
            timeline.append((round(time.perf_counter() - t0, 1), round(total / 1024), label() if label else ""))
        time.sleep(every)
    return peak


if __name__ == "__main__":
    main()
