"""Diagnostic figures (matplotlib, written as PNG), built from stored results; no computation here."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["motion_figure", "cnmf_figure"]


def _show(ax, image: np.ndarray, title: str) -> None:
    lo, hi = np.percentile(image, [1, 99.7])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def motion_figure(row: dict, timestamps: np.ndarray | None, path: str | Path, title: str = "") -> Path:
    """Shifts over time and the summary images of one MotionCorrection row.

    Parameters
    ----------
    row : dict
        A MotionCorrection row (``shifts``, ``frame_index``, ``corrupted_frames``, ``mean_image``,
        ``max_image``, ``std_image``, ``correlation_image``, ``pnr_image``).
    timestamps : numpy.ndarray or None
        float64 (raw frames,), seconds; the x axis is time when given, else frame.
    path : str or pathlib.Path
        PNG file to write.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    images = [np.asarray(row[k]) for k in ("mean_image",)]
    aspect = images[0].shape[0] / images[0].shape[1]
    fig = plt.figure(figsize=(13, 3.2 + 2.6 * aspect), constrained_layout=True)
    grid = fig.add_gridspec(2, 5, height_ratios=[3.0, 2.6 * aspect])
    ax = fig.add_subplot(grid[0, :])
    idx = np.asarray(row["frame_index"])
    x = timestamps[idx] - timestamps[0] if timestamps is not None else idx
    shifts = np.asarray(row["shifts"])
    ax.plot(x, shifts[:, 0], lw=0.8, label="y")
    ax.plot(x, shifts[:, 1], lw=0.8, label="x")
    bad = np.asarray(row["corrupted_frames"], int)
    if bad.size:
        bx = timestamps[bad] - timestamps[0] if timestamps is not None else bad
        ax.plot(bx, np.full(bad.size, shifts.min() - 0.5), "r|", ms=10, label="corrupted frames")
    ax.set_xlabel("time (s)" if timestamps is not None else "frame")
    ax.set_ylabel("shift (pixels)")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax.set_title(f"rigid shifts: median |shift| {np.median(np.abs(shifts - np.median(shifts, 0))):.2f} px, "
                 f"range y {np.ptp(shifts[:, 0]):.1f} px, x {np.ptp(shifts[:, 1]):.1f} px", fontsize=9)
    for i, (key, name) in enumerate([("mean_image", "mean"), ("max_image", "max"), ("std_image", "std"),
                                     ("correlation_image", "local correlation"), ("pnr_image", "peak-to-noise")]):
        _show(fig.add_subplot(grid[1, i]), np.asarray(row[key]), name)
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cnmf_figure(A, max_image: np.ndarray, C: np.ndarray, S: np.ndarray, times: np.ndarray | None,
                path: str | Path, title: str = "", n_traces: int = 12, unit_ids: np.ndarray | None = None) -> Path:
    """Footprint contours on the max projection, and a sample of traces with their activity.

    Parameters
    ----------
    A : scopeline.core.footprints.Footprints
        The units' footprints (peak 1).
    max_image : numpy.ndarray
        float (height, width): max projection of the corrected movie.
    C, S : numpy.ndarray
        float (units, frames): calcium traces and deconvolved activity (movie units).
    times : numpy.ndarray or None
        float (frames,) seconds; the x axis is time when given, else frame.
    path : str or pathlib.Path
        PNG file to write.
    title : str
    n_traces : int
        Traces shown: the units with the largest peaks, in unit order.
    unit_ids : numpy.ndarray, optional
        Labels of the units (default 0..units-1).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    k = len(A)
    ids = np.arange(k) if unit_ids is None else np.asarray(unit_ids)
    fig = plt.figure(figsize=(14, 6.5))
    ax_img = fig.add_axes([0.02, 0.05, 0.42, 0.85])
    _show(ax_img, max_image, f"max projection, {k} units (contours at half peak)")
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    sy, sx = A.patches.shape[1:] if k else (0, 0)
    for i in range(k):
        y0, x0 = A.offsets[i]
        ax_img.contour(np.arange(x0, x0 + sx), np.arange(y0, y0 + sy), A.patches[i], levels=[0.5],
                       colors=[colors[i % 20]], linewidths=0.8)
        cy, cx = A.centroids()[i]
        if np.isfinite(cy):
            ax_img.text(cx, cy, str(ids[i]), color=colors[i % 20], fontsize=6, ha="center", va="center")
    ax_tr = fig.add_axes([0.5, 0.08, 0.48, 0.82])
    if k:
        pick = np.sort(np.argsort(-C.max(axis=1))[:n_traces])
        x = np.arange(C.shape[1]) if times is None else np.asarray(times)
        for row, i in enumerate(pick):
            peak = max(float(C[i].max()), 1e-12)
            base = -row * 1.3
            ax_tr.plot(x, base + C[i] / peak, lw=0.7, color=colors[i % 20])
            s = S[i] / max(float(S[i].max()), 1e-12)
            nz = s > 0.02  # ticks 2% of the largest and up
            ax_tr.vlines(x[nz], base - 0.3, base - 0.3 + 0.25 * s[nz], color="k", lw=0.6)
            ax_tr.text(x[0], base + 0.55, f"unit {ids[i]} (peak {peak:.1f})", fontsize=7)
        ax_tr.set_yticks([])
        ax_tr.set_xlabel("time (s)" if times is not None else "frame")
        ax_tr.set_title("C (scaled to each unit's peak) and S (ticks)", fontsize=9)
    else:
        ax_tr.text(0.5, 0.5, "no unit", ha="center", va="center")
        ax_tr.set_axis_off()
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
