"""Benchmark: throughput of 1, 2 and 4 `scopeline worker` processes sharing one database.

Eight short simulated recordings (128 x 128, 1,000 frames each, 30 cells) are ingested into a private
scopeline server (a scratch SCOPELINE_HOME), queued for the whole chain (motion, initialization, CNMF,
curation), and run by N workers started together, each with one block at a time
(``--workers 1``); the wall time until every worker is idle gives frames per second for the machine.
The database is emptied between runs. Results are appended to
``benchmarks/results/worker_throughput.jsonl``.

    python benchmarks/worker_throughput.py [--workers 1 2 4] [--recordings 8]
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

HERE = Path(__file__).resolve().parent


def _cli(env, *args):
    out = subprocess.run([sys.executable, "-m", "scopeline.cli", *map(str, args)], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        raise RuntimeError(f"scopeline {' '.join(map(str, args))}: {out.stderr[-2000:]}")
    return out.stdout


def main() -> None:
    from scopeline.core import simulate as sim

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--frames", type=int, default=1000)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DJ_", "SCOPELINE_"))}
        folders = []
        for k in range(args.recordings):
            folder = tmp / "data" / f"rec{k}"
            sim.simulate(folder, sim.SimulationParams(height=128, width=128, n_frames=args.frames, n_cells=30,
                                                      seed=200 + k))
            folders.append(folder)
        for n in args.workers:
            env = {**base, "SCOPELINE_HOME": str(tmp / "home"), "SCOPELINE_SCHEMA_PREFIX": f"bench{n}_"}
            for k, folder in enumerate(folders):
                _cli(env, "ingest", folder, "-s", "bench", "-d", f"d{k}")
            _cli(env, "task", "curation", "-s", "bench")
            t0 = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, "-m", "scopeline.cli", "worker", "--idle-exit", "5",
                                       "--max-sleep", "1", "--workers", "1"], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for _ in range(n)]
            logs = [p.communicate()[0] for p in procs]
            seconds = time.perf_counter() - t0 - 5  # less the idle wait before exiting
            done = sum(line.count("done in") for log in logs for line in log.splitlines())
            failed = sum(line.count("FAILED") for log in logs for line in log.splitlines())
            status = {r["table"]: r["done"] for r in json.loads(_cli(env, "status", "--json"))}
            row = {"workers": n, "recordings": args.recordings, "frames_each": args.frames, "size": "128x128",
                   "seconds": round(seconds, 1), "frames_per_s": round(args.recordings * args.frames / seconds, 1),
                   "jobs_done": done, "jobs_failed": failed, "cnmf_rows": status.get("CNMF", 0)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        _cli({**base, "SCOPELINE_HOME": str(tmp / "home")}, "db", "down")
    out = {"machine": f"{platform.node()} {os.cpu_count()} cores", "runs": rows}
    with open(HERE / "results" / "worker_throughput.jsonl", "a") as fh:
        fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
