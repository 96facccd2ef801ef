"""Benchmark: time and peak memory of simulating, ingesting and streaming a large V4 recording.

Each step runs in its own child process so its peak resident memory (``ru_maxrss``) is its own:

1. ``simulate``: write a simulated Miniscope V4 recording (FFV1 AVIs, 1000 frames per file);
2. ``ingest``: ``scopeline ingest`` into the database (validation reads headers and first/last frames);
3. ``stream``: a full pass over the movie through the lazy reader (max projection, dask threads).

Usage::

    python benchmarks/ingest_memory.py --frames 20000 --size 512 --cells 300 --work /tmp/bench

The database is the one scopeline is configured for (DJ_* / datajoint.json), else a private server
under ``--work``. Results are printed and appended as JSON lines to ``benchmarks/results/ingest.jsonl``.
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

SIMULATE = """
import sys
from scopeline.core import simulate as sim
p = sim.SimulationParams(height={size}, width={size}, n_frames={frames}, n_cells={cells}, seed=0)
sim.simulate(sys.argv[1], p)
"""

STREAM = """
import sys, time, dask
from scopeline.pipeline import activate, acquisition
activate()
rec = acquisition.RecordingInfo & {{"subject": "bench", "session": "s{frames}"}}
movie = rec.movie()
t0 = time.perf_counter()
with dask.config.set(scheduler="threads", num_workers=2):
    mx = movie.max(axis=0).compute()
print(time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cells", type=int, default=300)
    ap.add_argument("--work", type=Path, default=Path("/tmp/scopeline-bench"))
    ap.add_argument("--keep", action="store_true", help="Keep the simulated recording.")
    args = ap.parse_args()

    env = dict(os.environ)
    env.setdefault("SCOPELINE_HOME", str(args.work / "home"))
    env.setdefault("SCOPELINE_SCHEMA_PREFIX", "scopeline_bench_")
    env["DJ_LOG_LEVEL"] = "WARNING"
    rec = args.work / f"sim_{args.size}_{args.frames}"
    shutil.rmtree(rec, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    result = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
              "frames": args.frames, "height": args.size, "width": args.size, "cells": args.cells,
              "movie_MiB": args.frames * args.size * args.size / 2**20}

    # each child's ru_maxrss is measured alone: a fresh grandparent per step
    def step(name, argv):
        wrapper = ("import resource, subprocess, sys, time; t=time.perf_counter(); "
                   "o=subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                   "w=time.perf_counter()-t; print(o.stdout, end=''); print(o.stderr, end='', file=sys.stderr); "
                   "print('@@', w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024); sys.exit(o.returncode)")
        out = subprocess.run([py, "-c", wrapper, *argv], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        lines = out.stdout.strip().splitlines()
        wall, peak = map(float, lines[-1].split()[1:])
        result[f"{name}_s"] = round(wall, 2)
        result[f"{name}_peak_MiB"] = round(peak, 1)
        print(f"{name:9s} {wall:8.1f} s   peak RSS {peak:8.1f} MiB", flush=True)
        return lines[:-1]

    step("simulate", [py, "-c", SIMULATE.format(size=args.size, frames=args.frames, cells=args.cells), str(rec)])
    result["disk_MiB"] = round(sum(f.stat().st_size for f in rec.rglob("*.avi")) / 2**20, 1)
    step("ingest", [py, "-m", "scopeline.cli", "ingest", str(rec), "--subject", "bench",
                    "--session", f"s{args.frames}"])
    stream_out = step("stream", [py, "-c", STREAM.format(frames=args.frames)])
    compute = float(stream_out[-1])
    result["stream_frames_per_s"] = round(args.frames / compute, 1)
    print(json.dumps(result, indent=2))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    with open(results / "ingest.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")
    if not args.keep:
        shutil.rmtree(rec, ignore_errors=True)


if __name__ == "__main__":
    main()
