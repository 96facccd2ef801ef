"""Benchmark: the real recordings of ``../shared/data`` with default parameters, as a new user runs them.

- CA1 (Minian's demo, already registered, about 70-80 visible cells): units, where they are (distance
  to the frame edge), a figure of the units over the max-minus-mean projection beside the units the
  spatial-consistency gate dropped; then the same movie with the sensor's artifacts added
  (:func:`scopeline.core.simulate.add_sensor_artifacts`: line noise and its bursts at the ratio to pixel
  noise measured on the wireless recording, and at the wireless recording's absolute strength; hot and
  dead pixels): units and the fraction matched by centroid (5 px) to the clean run's.
- Wireless (60 frames, no cells, line noise and corrupted frames): line noise before / after, frames
  flagged, seeds kept, units.

Results go to ``benchmarks/results/realdata.jsonl`` and the figure to ``docs/figures/ca1_units.png``.

    python benchmarks/realdata.py
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def _chain(movie, fps: float, params, out: str, min_r_value: float = 0.8):
    import zarr

    from scopeline.core import cnmf, initialize, motion
    from scopeline.pipeline._objects import create_zarr

    res = motion.correct_motion(movie, params, lambda s, c, d: create_zarr(out, s, c, d), workers=2)
    corrected = zarr.open_array(out, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        init = initialize.initialize(corrected, fps, valid=initialize.valid_region(corrected.shape[1:], res.shifts,
                                                                                   fov=res.fov))
        units = cnmf.cnmf(corrected, init.A, init.C, init.b, init.f, cnmf.CNMFParams(min_r_value=min_r_value),
                          diameter=8, fps=fps, fov=res.fov)
    return res, init, units, corrected


def _figure(corrected, units, path: Path, fov: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    movie = np.asarray(corrected[:], np.float32)
    img = movie.max(axis=0) - movie.mean(axis=0)
    keep = units.metrics["r_value"] >= 0.8
    fig, axes = plt.subplots(1, 2, figsize=(16, 5.6), constrained_layout=True)
    lo, hi = np.percentile(img, [1, 99.7])
    for ax, show, title in ((axes[0], keep, f"{keep.sum()} units (default: spatial consistency r >= 0.8)"),
                            (axes[1], ~keep, f"{(~keep).sum()} units CNMF fitted that the gate dropped (r < 0.8)")):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.contour(fov.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        sy, sx = units.A.patches.shape[1:]
        for i in np.flatnonzero(show):
            y0, x0 = units.A.offsets[i]
            ax.contour(np.arange(x0, x0 + sx), np.arange(y0, y0 + sy), units.A.patches[i], levels=[0.5],
                       colors=["lime" if keep[i] else "red"], linewidths=0.7)
        ax.set_title(f"CA1, max - mean projection: {title}", fontsize=10)
        ax.set_axis_off()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _curations(corrected, every, gated: np.ndarray, fov: np.ndarray) -> dict:
    """Units each curation preset accepts, after the CNMF gate (what ``scopeline run`` stores) and with
    the gate off (curation alone), with the rejection reasons; the figure of the default one over the
    max - mean projection (``docs/figures/ca1_curation.png``)."""
    from scopeline.core import curation
    from scopeline.figures import curation_figure

    metrics = {**every.metrics, "snr": every.snr}
    out = {}
    for label, subset in (("after_gate", gated), ("gate_off", np.ones(len(every.A), bool))):
        m = {k: np.asarray(v)[subset] for k, v in metrics.items()}
        for name in curation.PRESETS:
            res = curation.curate(m, curation.PRESETS[name], A=every.A.subset(subset), C=every.C[subset])
            reasons: dict = {}
            for text in res.reasons:
                for part in filter(None, text.split("; ")):
                    key = ("duplicate" if part.startswith("duplicate") else "accept_any" if part.startswith("no accept_any")
                           else part.split(" ")[0])
                    reasons[key] = reasons.get(key, 0) + 1
            out[f"{label}_{name}"] = {"units": int(subset.sum()), "accepted": int(res.accepted.sum()),
                                      "rejected_by": reasons}
            if label == "after_gate" and name == "default":
                movie = np.asarray(corrected[:], np.float32)
                state = curation.initial_state(np.arange(int(subset.sum())), res)
                curation_figure(every.A.subset(subset), movie.max(axis=0) - movie.mean(axis=0), list(state),
                                list(state.values()), m, every.C[subset], None,
                                HERE.parent / "docs" / "figures" / "ca1_curation.png", rules=curation.PRESETS[name],
                                title="CA1 (../shared/data), default preset, default curation", fov=fov)
    return out


def main() -> None:
    import tifffile

    from scopeline.core import io, motion, quality
    from scopeline.core import simulate as sim

    out = {"machine": f"{platform.node()} {os.cpu_count()} cores"}
    tmp = tempfile.mkdtemp(prefix="scopeline-realdata-")
    ca1_path = DATA / "ca1_miniscope_v3" / "ca1_500x240x376_uint8.tif"
    if ca1_path.exists():
        ca1 = tifffile.imread(ca1_path)
        res, init, every, corrected = _chain(ca1, 15.0, motion.MotionParams(), f"{tmp}/ca1.zarr", min_r_value=-1)
        keep = every.metrics["r_value"] >= 0.8
        A = every.A.subset(keep)
        cy, cx = A.centroids().T
        edge = np.minimum.reduce([cy, ca1.shape[1] - 1 - cy, cx, ca1.shape[2] - 1 - cx])
        _figure(corrected, every, HERE.parent / "docs" / "figures" / "ca1_units.png", res.fov)
        out["ca1_curation"] = _curations(corrected, every, keep, res.fov)
        out["ca1"] = {"units": int(keep.sum()), "fitted_before_gate": len(every.A), "seeds": len(init.seeds),
                      "removed_by": {k: init.removed_by.count(k) for k in sorted(set(init.removed_by))},
                      "fov_fraction": round(float(res.fov.mean()), 3), "fov_info": res.fov_info,
                      "closest_to_edge_px": round(float(edge.min()), 1), "within_8_px_of_edge": int((edge < 8).sum())}
        noise = float(res.line_noise["pixel_noise"])
        for label, scale in (("measured_ratio", 1.19 * noise / 4.0), ("wireless_absolute", 1.0)):
            p = sim.SimulationParams.with_artifacts(["line_noise", "defective_pixels"], seed=3,
                                                    line_noise_sd=4.0 * scale, stripe_burst_sd=15.0 * scale)
            noisy, _ = sim.add_sensor_artifacts(ca1, p)
            nres, _, nunits, _ = _chain(noisy, 15.0, motion.MotionParams(), f"{tmp}/noisy_{label}.zarr")
            ei, _ = quality.match_units(A.centroids(), nunits.A.centroids(), 5.0)
            out[f"ca1_with_sensor_artifacts_{label}"] = {
                "line_noise_sd_added": round(4.0 * scale, 2), "line_noise": nres.line_noise, "units": len(nunits.A),
                "matched": len(ei), "fraction_of_clean": round(len(ei) / max(len(A), 1), 3),
                "fraction_of_noisy": round(len(ei) / max(len(nunits.A), 1), 3)}
    wl = DATA / "wireless_corrupted_frames" / "wireless_corrupted.avi"
    if wl.exists():
        meta = io.read_metadata(io.discover(wl)[0])
        params = motion.MotionParams(registration=motion.RegistrationParams(template_frames=40), block_frames=60,
                                     chunk_frames=60)
        res, init, units, _ = _chain(meta.movie(chunk_frames=60), meta.fps, params, f"{tmp}/wl.zarr")
        out["wireless"] = {"line_noise": res.line_noise, "corrupted": {str(k): v for k, v in res.corrupted.items()},
                           "seeds": len(init.seeds),
                           "removed_by": {k: init.removed_by.count(k) for k in sorted(set(init.removed_by))},
                           "units": len(units.A)}
    print(json.dumps(out, indent=1, default=float))
    with open(HERE / "results" / "realdata.jsonl", "a") as fh:
        fh.write(json.dumps(out, default=float) + "\n")


if __name__ == "__main__":
    main()
