"""Diagnostic figures (matplotlib, written as PNG), built from stored results; no computation here."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["motion_figure"]


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
