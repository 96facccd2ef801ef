"""Benchmark: one whole session through ``scopeline run``, as a lab runs it, timed against its duration.

A simulated Miniscope V4 recording (every real-data artifact on; reused when ``--work`` holds it) is
processed by ``scopeline run`` in a child process with a fresh private database (``SCOPELINE_HOME`` in
``--work``): ingestion, motion correction, initialization, CNMF, the automatic curation, figures and the
NWB file. The process tree's resident memory is sampled every 0.5 s; the wall time of every stage comes
from its row; the accepted units are scored against the simulator's ground truth like the suite's
(:func:`benchmarks.cnmf._score`). One JSON and one Markdown report go to ``benchmarks/results/session/``.

    python benchmarks/session.py --size 608 --frames 36000 --cells 500 --fps 30 --work /tmp/session
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import cnmf as bench  # noqa: E402
from benchmarks import suite  # noqa: E402

SCORE = r"""
import json, sys
import numpy as np
from scopeline import database
from scopeline.pipeline import activate, acquisition, cnmf, curation, initialization, motion, presets, units
database.configure()
activate()
rec = acquisition.Recording.fetch1("KEY")
key = presets.result_key(rec, "default", "cnmf")
res = units.arrays(key)
mc = motion.MotionCorrection & key
np.savez(sys.argv[1], patches=res["A"].patches, offsets=res["A"].offsets, shape=np.array(res["A"].shape), C=res["C"],
         S=res["S"], shifts=mc.fetch1("shifts"), fov=mc.field_of_view())
seconds = {}
for name, table in (("motion", motion.MotionCorrection), ("initialization", initialization.Initialization),
                    ("cnmf", cnmf.CNMF)):
    row = (table & key).fetch1()
    seconds[name] = round(float(row["compute_time"]), 1)
    seconds.update({f"{name}_{k}": v for k, v in row["seconds"].items()})
found = int((cnmf.CNMF & key).fetch1("n_units"))
removed = {}
for r in (initialization.Initialization.Seed & key).fetch("removed_by"):
    removed[r or "kept"] = removed.get(r or "kept", 0) + 1
print(json.dumps({"seconds": seconds, "found": found, "accepted": len(res["A"]), "seeds": removed,
                  "init_units": int((initialization.Initialization & key).fetch1("n_units"))}))
"""


def run(size: int, frames: int, cells: int, level: float, fps: float, work: Path, seed: int = 0,
        artifacts: str = "all", minian: Path | None = None) -> dict:
    """Simulate (or reuse) the recording, run ``scopeline run`` on it and score it; the report's dict.
    ``artifacts``: ``all`` (every real-data artifact) or ``none`` (the clean simulator). ``minian``: a
    virtual environment with Minian 2.0.2, whose whole pipeline then runs on the same recording after
    scopeline's (:func:`benchmarks.cnmf._minian`), timed and scored the same way."""
    from scopeline.core import simulate as sim

    work.mkdir(parents=True, exist_ok=True)
    rec = work / f"sim_{size}_{frames}_{cells}_{level}_{seed}{'_realistic' if artifacts == 'all' else ''}"
    if not list(rec.glob("*/My_V4_Miniscope/timeStamps.csv")):
        shutil.rmtree(rec, ignore_errors=True)
        params = sim.SimulationParams.with_artifacts(
            list(sim.ARTIFACTS) if artifacts == "all" else [], height=size, width=size, n_frames=frames,
            n_cells=cells, signal_level=level, seed=seed, fps=fps)
        sim.simulate(rec, params)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    env = {**os.environ, "SCOPELINE_HOME": str(home)}
    cli = [sys.executable, "-m", "scopeline.cli"] if not shutil.which("scopeline") else [shutil.which("scopeline")]
    up = subprocess.run([*cli, "db", "up"], env=env, capture_output=True, text=True)
    if up.returncode:
        raise SystemExit(f"scopeline db up failed (exit {up.returncode}):\n{up.stdout}{up.stderr}")
    timeline: list = []
    try:
        t = time.perf_counter()
        with open(work / "run.log", "w") as log:  # a file, not a pipe: nobody reads a pipe while the run goes,
            # and the progress bars would fill it and stop the run
            proc = subprocess.Popen([*cli, "run", str(rec), "--subject", "bench", "--session", "s1", "--out",
                                     str(work / "out")], env=env, stdout=log, stderr=subprocess.STDOUT)
            peak = bench.sample_tree_rss(proc, 0.5, timeline, _StageOf(work / "run.log"))
            proc.wait()
        wall = time.perf_counter() - t
        if proc.returncode:
            tail = (work / "run.log").read_text()[-3000:]
            raise SystemExit(f"scopeline run failed (exit {proc.returncode}); see {work / 'run.log'}:\n{tail}")
        npz = work / "result.npz"
        out = subprocess.run([sys.executable, "-c", SCORE, str(npz)], env=env, check=True, capture_output=True, text=True)
        stages = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([*cli, "db", "down"], env=env, capture_output=True)
    score = bench._score(rec, npz, None, oracle=False)
    phases = _phases((work / "run.log").read_text(errors="replace"))
    phases["start-up"] = round(wall - phases.pop("done", wall), 1)
    duration = frames / fps
    staged = sum(stages["seconds"][k] for k in ("motion", "initialization", "cnmf"))
    result = {"machine": suite.machine(), "size": size, "frames": frames, "cells": cells, "signal_level": level,
              "fps": fps, "artifacts": artifacts, "recording_s": round(duration, 1), "wall_s": round(wall, 1),
              "realtime_ratio": round(wall / duration, 3), "stages_s": round(staged, 1),
              "fixed_s": round(wall - staged, 1), "phases_s": phases, "seconds": stages["seconds"],
              "peak_tree_rss_MiB": round(peak), "peak_by_stage_MiB": _peaks(timeline), "memory_timeline": timeline,
              "found": stages["found"], "accepted": stages["accepted"], "init_units": stages["init_units"],
              "seeds": stages["seeds"],
              "accuracy": score["accuracy"], "shift_rmse_px": score["shift_rmse_px"]}
    if minian is not None:
        result["minian"] = bench._minian(minian.resolve(), next(rec.glob("*/My_V4_Miniscope")), work, rec)
        result["speedup_vs_minian"] = round(result["minian"]["summary"]["total_wall_s"] / wall, 1)
    return result


def _phases(log: str) -> dict:
    """The wall time (s) of the run's phases from its closing line, ``done in T s (ingest a s, pipeline b
    s, ...)``: ``{"done": T, "ingest": a, ...}`` (empty when the log has no such line)."""
    import re

    found = re.findall(r"done in ([\d.]+) s(?: \(([^)]*)\))?", log)
    if not found:
        return {}
    total, split = found[-1]
    phases = {"done": float(total)}
    for name, sec in re.findall(r"([\w-]+) ([\d.]+) s", split):
        phases[name] = float(sec)
    return phases


_BARS = (("motion ", "motion"), ("init ", "initialization"), ("cnmf ", "cnmf"), ("merge ", "curation"),
         ("NWB ", "nwb"))


class _StageOf:
    """Names the stage whose progress bar was written last to the run's log: ``start`` before any bar,
    ``finish`` (curation, figures, NWB) once the last bar is out of the log's tail."""

    def __init__(self, log: Path) -> None:
        self.log, self.seen = log, False

    def __call__(self) -> str:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(max(0, fh.seek(0, 2) - 400))
                tail = fh.read().decode(errors="replace")
        except OSError:
            tail = ""
        at, name = max((tail.rfind(prefix), name) for prefix, name in _BARS)
        if at >= 0:
            self.seen = True
            return name
        return "finish" if self.seen else "start"


def _peaks(timeline: list) -> dict:
    """Peak memory (MiB) of each stage over the labelled samples, in the order they ran."""
    peaks: dict = {}
    for _, mib, label in timeline:
        peaks[label] = max(peaks.get(label, 0), mib)
    return peaks


def plot_memory(r: dict, path: Path) -> None:
    """Memory of the process tree against time, coloured by stage, with the 2 GiB bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    tl = r["memory_timeline"]
    for label in dict.fromkeys(x[2] for x in tl):
        pts = [(t / 60, m) for t, m, lab in tl if lab == label]
        ax.plot(*zip(*pts), ".", ms=2, label=label)
    ax.axhline(2048, color="k", lw=0.8, ls="--")
    ax.set(xlabel="minutes", ylabel="MiB (process tree)",
           title=f"{r['size']} x {r['size']} x {r['frames']:,} frames: memory by stage")
    ax.legend(markerscale=4, fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(r: dict) -> str:
    """The report as Markdown."""
    m, acc = r["machine"], r["accuracy"]
    verdict = "faster" if r["wall_s"] < r["recording_s"] else "slower"
    lines = ["# scopeline benchmark: one session through `scopeline run`", "",
             f"Machine: {m['cores']} cores, {m['memory_gb']} GiB, {m['cpu']}; Python {m['python']}; commit {m['commit']}.",
             "", f"Simulated Miniscope V4 recording, {r['size']} x {r['size']} x {r['frames']:,} frames at "
             f"{r['fps']:g} Hz ({r['recording_s'] / 60:.1f} min), {r['cells']} cells, signal {r['signal_level']}, "
             + ("every real-data artifact on." if r.get("artifacts", "all") == "all" else "no artifacts (the clean simulator)."),
             "",
             "| wall (end to end) | recording | wall / recording | stages | ingest, curation, figures, NWB, start-up |"
             " peak memory (process tree) |", "|---|---|---|---|---|---|",
             f"| {r['wall_s']:.0f} s | {r['recording_s']:.0f} s | {r['realtime_ratio']:.2f} ({verdict} than recorded) | "
             f"{r['stages_s']:.0f} s | {r['fixed_s']:.0f} s | {r['peak_tree_rss_MiB']:,} MiB |", ""]
    if r.get("phases_s"):
        ph = r["phases_s"]
        outside = {k: v for k, v in ph.items() if k != "pipeline"}
        lines += ["Outside the stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in outside.items())
                  + (f"; the populate calls took {ph['pipeline']:.1f} s, {ph['pipeline'] - r['stages_s']:.1f} s more "
                     "than the stages' own times (curation, queries, queueing)." if "pipeline" in ph else "."), ""]
    lines += ["| stage | s | frames / s |", "|---|---|---|"]
    for name in ("motion", "initialization", "cnmf"):
        s = r["seconds"][name]
        lines.append(f"| {name} | {s:.0f} | {r['frames'] / s:.1f} |")
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items() if "_" in k and k.split("_", 1)[1] != "total")
    lines += ["", f"Steps: {steps}.", ""]
    if r.get("seeds"):
        why = ", ".join(f"{k} {v}" for k, v in sorted(r["seeds"].items(), key=lambda kv: -kv[1]) if k != "kept")
        lines += [f"Initialization: {sum(r['seeds'].values())} candidate seeds, {r['seeds'].get('kept', 0)} kept "
                  f"(removed by {why}); {r['init_units']} units entered CNMF, which found {r['found']}.", ""]
    lines += ["| units found | accepted | F1 | precision | recall | footprint r | trace r | spike r | shift RMSE (px) |",
              "|---|---|---|---|---|---|---|---|---|",
              f"| {r['found']} | {r['accepted']} | {acc['f1']:.3f} | {acc['precision']:.3f} | {acc['recall']:.3f} | "
              f"{acc['footprint_corr']:.3f} | {acc['trace_corr']:.3f} | {acc['spike_corr']:.3f} | {r['shift_rmse_px']:.3f} |",
              "", "Accuracy of the accepted units (the default curation) against the ground truth, the suite's "
              "metrics (cells the lens shows in only some frames count neither way).", ""]
    if r.get("minian"):
        mi, ma = r["minian"]["summary"], r["minian"]["accuracy"]
        lines += ["Side by side, same recording, one run: scopeline (`scopeline run`, ingest to NWB, curation "
                  "included) and Minian 2.0.2's whole pipeline (`../shared/anchors/run_minian.py`: its demo "
                  "notebook's steps and defaults, cell radius 8 px, 2 dask workers), scored the same way.", "",
                  "| | wall | peak memory | units | F1 | precision | recall | footprint r | trace r | spike r |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  f"| scopeline | {r['wall_s']:.0f} s | {r['peak_tree_rss_MiB']:,} MiB | {r['accepted']} | {acc['f1']:.3f} | "
                  f"{acc['precision']:.3f} | {acc['recall']:.3f} | {acc['footprint_corr']:.3f} | {acc['trace_corr']:.3f} | "
                  f"{acc['spike_corr']:.3f} |",
                  f"| Minian 2.0.2 | {mi['total_wall_s']:.0f} s | {mi['peak_rss_tree_gb'] * 1e9 / 2**20:,.0f} MiB | "
                  f"{r['minian']['units']} | {ma['f1']:.3f} | {ma['precision']:.3f} | {ma['recall']:.3f} | "
                  f"{ma['footprint_corr']:.3f} | {ma['trace_corr']:.3f} | {ma['spike_corr']:.3f} |", "",
                  f"scopeline end to end is **{r['speedup_vs_minian']:.1f}x** Minian's wall time.", ""]
    if r.get("peak_by_stage_MiB"):
        lines += ["Peak memory by stage (process tree, MiB; the stage whose progress bar ran last): "
                  + ", ".join(f"{k} {v:,}" for k, v in r["peak_by_stage_MiB"].items()) + ".", "",
                  f"![memory]({r['stem']}-memory.png)", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=608)
    ap.add_argument("--frames", type=int, default=36000)
    ap.add_argument("--cells", type=int, default=500)
    ap.add_argument("--signal", type=float, default=1.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/scopeline-bench-session"))
    ap.add_argument("--artifacts", choices=("all", "none"), default="all",
                    help="every real-data artifact (default) or the clean simulator")
    ap.add_argument("--minian", type=Path, default=None,
                    help="Minian 2.0.2's virtual environment (../shared/anchors/install_minian.sh): run it side by side")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "session")
    args = ap.parse_args()
    r = run(args.size, args.frames, args.cells, args.signal, args.fps, args.work, args.seed, args.artifacts,
            args.minian)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"session-{args.size}x{args.frames}-{_dt.datetime.now():%Y%m%d-%H%M}-{r['machine']['commit']}"
    r["stem"] = stem
    plot_memory(r, args.out / f"{stem}-memory.png")
    (args.out / f"{stem}.json").write_text(json.dumps(r, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
