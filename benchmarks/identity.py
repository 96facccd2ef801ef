"""Benchmark: the same results before and after a change of the pipeline layer (issue 12's check).

Runs ``scopeline run`` (default preset, the private database, its own schema prefix) on each recording
with two source trees, ``--before`` (a ``git worktree`` of the commit before the change) and the tree
of this file, then compares every unit: ids, footprints, C and S. Recordings: the real CA1 recording of
``../shared/data`` and a simulated V4 session (256 x 256, 1,000 frames, 60 cells).

Results go to ``benchmarks/results/identity.jsonl``.

    git worktree add /tmp/before <commit>
    python benchmarks/identity.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"

#: child: run the chain with the tree on PYTHONPATH, save the result's arrays
CHILD = r"""
import sys, subprocess, numpy as np
rec, subject, fps, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
args = [sys.executable, "-m", "scopeline.cli", "run", rec, "-s", subject, "-d", "d1", "--no-nwb", "-o", out + "_figs"]
subprocess.run(args + (["--fps", fps] if fps != "-" else []), check=True, capture_output=True)
from scopeline.pipeline import activate, cnmf, presets
activate()
key = presets.result_key({"subject": subject, "session": "d1", "recording_id": 0}, "default")
res = (cnmf.CNMF & key).result()
A = res["A"]
np.savez(out, C=res["C"], S=res["S"], unit_id=res["unit_id"], A=A.dense())
"""


def _run(tree: Path, rec: Path, subject: str, fps, out: Path, prefix: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "SCOPELINE_SCHEMA_PREFIX": prefix}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, str(rec), subject, str(fps or "-"), str(out)], check=True, env=env)
    return {**np.load(str(out) + ".npz"), "seconds": time.perf_counter() - t0}


def _compare(a: dict, b: dict) -> dict:
    same_units = a["unit_id"].shape == b["unit_id"].shape and bool((a["unit_id"] == b["unit_id"]).all())
    out = {"units_before": int(len(a["unit_id"])), "units_after": int(len(b["unit_id"])), "same_unit_ids": same_units}
    if same_units:
        for name in ("A", "C", "S"):
            out[f"max_abs_diff_{name}"] = float(np.abs(a[name].astype(np.float64) - b[name]).max(initial=0.0))
            out[f"max_abs_{name}"] = float(np.abs(a[name]).max(initial=0.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="source tree before the change")
    args = parser.parse_args()
    from scopeline.core import simulate as sim

    work = Path(tempfile.mkdtemp(prefix="identity_"))
    recordings = []
    ca1 = DATA / "ca1_miniscope_v3" / "ca1_500x240x376_uint8.tif"
    if ca1.exists():
        recordings.append(("ca1", ca1, 15.0))
    simulated = work / "sim"
    sim.simulate(simulated, sim.SimulationParams(height=256, width=256, n_frames=1000, n_cells=60, seed=0))
    recordings.append(("sim", simulated, None))
    tag = f"id{os.getpid()}"
    rows = []
    for name, rec, fps in recordings:
        before = _run(args.before, rec, name, fps, work / f"{name}_before", f"{tag}b_")
        after = _run(HERE.parent, rec, name, fps, work / f"{name}_after", f"{tag}a_")
        row = {"recording": name, **_compare(before, after), "seconds_before": round(float(before["seconds"]), 1),
               "seconds_after": round(float(after["seconds"]), 1), "machine": f"{platform.machine()} "
               f"{os.cpu_count()} cores", "before": str(args.before)}
        print(json.dumps(row))
        rows.append(row)
    with open(HERE / "results" / "identity.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    for prefix in (f"{tag}b_", f"{tag}a_"):
        subprocess.run([sys.executable, "-c", "from scopeline.pipeline import activate, drop; activate(); drop(True)"],
                       env={**os.environ, "SCOPELINE_SCHEMA_PREFIX": prefix, "PYTHONPATH": str(HERE.parent / "src")},
                       check=False, capture_output=True)


if __name__ == "__main__":
    main()
