"""Benchmark: the two deconvolution backends on the same traces: agreement and speed.

Traces are the simulator's calcium (double-exponential kernel, Bernoulli spikes) plus a baseline and
Gaussian noise; the AR(1) coefficient and noise are estimated once per trace and given to both
backends, so they solve the same problem. Reports the largest relative difference of C (max |C_oasis
- C_cvxpy| / max |C_cvxpy|, per trace, then the maximum over traces), the time per trace and the
speed-up. Results are appended to ``benchmarks/results/deconvolve.jsonl``.

    python benchmarks/deconvolve.py --traces 50 --frames 2000 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from scopeline.core import deconvolve as dc

HERE = Path(__file__).resolve().parent


def traces(n: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(60) / 20.0
    kernel = np.exp(-t / 0.3) - np.exp(-t / 0.05)
    kernel /= kernel.max()
    s = (rng.random((n, frames)) < 0.01) * rng.uniform(0.5, 1.5, (n, frames))
    c = np.stack([np.convolve(x, kernel)[:frames] for x in s])
    return 2.0 + 10 * c + rng.normal(0, 1.0, (n, frames))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=50)
    ap.add_argument("--frames", type=int, nargs="+", default=[2000, 20000])
    args = ap.parse_args()
    dc.deconvolve(traces(1, 200)[0], backend="oasis")  # load the compiled solver before timing
    for frames in args.frames:
        ys = traces(args.traces, frames)
        seconds = {"oasis": 0.0, "cvxpy": 0.0}
        worst = 0.0
        for y in ys:
            sn = float(dc.noise_sn(y))
            g = dc.ar_coefficients(y, 1, sn)
            out = {}
            for backend in ("oasis", "cvxpy"):
                t0 = time.perf_counter()
                out[backend] = dc.deconvolve(y, backend=backend, g=g, sn=sn)
                seconds[backend] += time.perf_counter() - t0
            ref = out["cvxpy"].c
            worst = max(worst, float(np.abs(out["oasis"].c - ref).max() / max(np.abs(ref).max(), 1e-12)))
        result = {"machine": f"{platform.node()} {os.cpu_count()} cores", "traces": args.traces, "frames": frames,
                  "max_rel_diff_C": float(f"{worst:.2e}"),
                  "s_per_trace": {k: round(v / args.traces, 4) for k, v in seconds.items()},
                  "oasis_frames_per_s": round(frames * args.traces / seconds["oasis"]),
                  "speedup": round(seconds["cvxpy"] / seconds["oasis"], 1)}
        print(json.dumps(result), flush=True)
        (HERE / "results").mkdir(exist_ok=True)
        with open(HERE / "results" / "deconvolve.jsonl", "a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
