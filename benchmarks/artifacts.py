"""Measure the artifacts of real recordings that the simulator models, on ``../shared/data`` and on the
simulator itself, the same way (so their strengths can be compared).

Line noise (the real wireless Miniscope recording, 60 frames 200 x 200, labelled corrupted frames left
out): the row median of each difference of consecutive frames (a difference cancels the static image
and the slow background) minus its median over rows is ``sqrt(2)`` times a frame's per-row offsets;
their standard deviation, their correlation between neighbouring rows, and the per-pixel noise left
without them. Results are printed as JSON and appended to ``benchmarks/results/artifacts.jsonl``.

    python benchmarks/artifacts.py
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WIRELESS = HERE.parent.parent / "shared" / "data" / "wireless_corrupted_frames"


def line_noise_stats(movie: np.ndarray, good_pairs: np.ndarray | None = None) -> dict:
    """Row-offset statistics of a movie (frames, height, width) from differences of consecutive frames."""
    d = np.diff(movie.astype(np.float32), axis=0)
    if good_pairs is not None:
        d = d[good_pairs]
    rows = np.median(d, axis=2)
    rows -= np.median(rows, axis=1, keepdims=True)
    x = rows - rows.mean(axis=1, keepdims=True)
    var = float((x * x).mean())
    corr = [float((x[:, :-lag] * x[:, lag:]).mean() / var) for lag in (1, 2, 3)]
    t = rows - rows.mean(axis=0, keepdims=True)
    temporal = float((t[:-1] * t[1:]).mean() / max(float((t * t).mean()), 1e-12)) if len(t) > 2 else float("nan")
    left = d - rows[:, :, None]
    return {"row_offset_sd": round(float(rows.std()) / np.sqrt(2), 3),
            "row_correlation_lag_1_2_3": [round(c, 3) for c in corr],
            "difference_row_offsets_lag1_in_time": round(temporal, 3),
            "pixel_noise_sd": round(float(np.median(d.std(axis=0))) / np.sqrt(2), 3),
            "pixel_noise_sd_without_rows": round(float(np.median(left.std(axis=0))) / np.sqrt(2), 3)}


def main() -> None:
    import cv2

    from scopeline.core import io
    from scopeline.core import simulate as sim

    out = {"machine": f"{platform.node()} {os.cpu_count()} cores"}
    video = WIRELESS / "wireless_corrupted.avi"
    if video.exists():
        cap = cv2.VideoCapture(str(video))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., 0])
        movie = np.array(frames)
        bad = {7, 21, 23, 24, 32, 33, 34, 35}  # labels.yaml
        pairs = np.array([i not in bad and i + 1 not in bad for i in range(len(movie) - 1)])
        out["wireless"] = line_noise_stats(movie, pairs)
    else:
        out["wireless"] = f"absent: {video}"
    with tempfile.TemporaryDirectory() as tmp:
        p = sim.SimulationParams.with_artifacts(["line_noise"], height=200, width=200, n_frames=120, n_cells=0,
                                                seed=1, stripe_burst_prob=0)
        sim.simulate(tmp, p)
        movie = io.read_metadata(io.discover(tmp)[0]).movie().compute()
        out["simulator_line_noise"] = line_noise_stats(movie)
    print(json.dumps(out, indent=1))
    results = HERE / "results" / "artifacts.jsonl"
    with open(results, "a") as fh:
        fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
