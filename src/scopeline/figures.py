"""Diagnostic figures (matplotlib, written as PNG), built from stored results; no computation here."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["motion_figure", "cnmf_figure", "quality_figure", "curation_figure", "registration_figure"]


def _show(ax, image: np.ndarray, title: str) -> None:
    lo, hi = np.percentile(image, [1, 99.7])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _save(fig, path: str | Path, title: str = "") -> Path:
    """Title the figure, write it as PNG (folders created) and close it."""
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, pil_kwargs={"compress_level": 1})  # zlib's fastest: ~6% larger, quicker to write
    plt.close(fig)
    return path


def _margins(width: float, height: float, left: float, right: float, top: float, bottom: float, hspace: float,
             wspace: float) -> dict:
    """A grid's fixed margins (inches) as the figure fractions ``add_gridspec`` takes, and its spacing
    (fractions of an axis). A fixed layout, not matplotlib's constrained one: that one measured every
    tick label and title, ~0.5 s a figure, more than drawing it."""
    return {"left": left / width, "right": 1 - right / width, "top": 1 - top / height, "bottom": bottom / height,
            "hspace": hspace, "wspace": wspace}


def _frame_axis(timestamps: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    return timestamps[idx] - timestamps[0] if timestamps is not None else idx


def motion_figure(row: dict, timestamps: np.ndarray | None, path: str | Path, title: str = "") -> Path:
    """Shifts, registration confidence and line noise over time, and the summary images of one
    MotionCorrection row, with the field of view and the flagged frames.

    Parameters
    ----------
    row : dict
        A MotionCorrection row (``shifts``, ``frame_index``, ``corrupted_frames``, ``corrupted_reasons``,
        ``mean_image``, ``max_image``, ``std_image``, ``correlation_image``, ``pnr_image``; and, from
        scopeline 0.2, ``confidence``, ``template_confidence``, ``fallback_frames``, ``dark_frames``,
        ``row_noise``, ``line_noise``, ``fov``, ``lens``, ``defects``, ``mean_raw``).
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
    mean = np.asarray(row["mean_image"])
    aspect = mean.shape[0] / mean.shape[1]
    height = 5.4 + 2.5 * aspect
    fig = plt.figure(figsize=(15, height))
    grid = fig.add_gridspec(3, 6, height_ratios=[2.4, 1.6, 2.5 * aspect], **_margins(15, height, left=0.6, right=0.7,
                                                                                     top=0.6, bottom=0.1, hspace=0.55,
                                                                                     wspace=0.05))
    idx = np.asarray(row["frame_index"])
    x = _frame_axis(timestamps, idx)
    shifts = np.asarray(row["shifts"])
    ax = fig.add_subplot(grid[0, :])
    ax.plot(x, shifts[:, 0], lw=0.8, label="y")
    ax.plot(x, shifts[:, 1], lw=0.8, label="x")
    low = shifts.min() - 0.5
    marks = [("corrupted_frames", "r", "corrupted / striped frames (repaired)", True),
             ("dark_frames", "m", "dark frames at the start", True),
             ("fallback_frames", "k", "shift from neighbours (peak in doubt)", False)]
    for k, (name, color, label, raw) in enumerate(marks):
        frames = row.get(name)
        if frames is None or not len(frames):
            continue
        frames = np.asarray(frames, int)
        fx = (_frame_axis(timestamps, frames) if raw else x[frames])
        ax.plot(fx, np.full(len(frames), low - 0.4 * k), "|", color=color, ms=8, label=f"{label} ({len(frames)})")
    ax.set_xlabel("time (s)" if timestamps is not None else "frame")
    ax.set_ylabel("shift (pixels)")
    ax.legend(loc="upper right", fontsize=7, ncol=5)
    ax.set_title(f"rigid shifts: median |shift| {np.median(np.abs(shifts - np.median(shifts, 0))):.2f} px, "
                 f"range y {np.ptp(shifts[:, 0]):.1f} px, x {np.ptp(shifts[:, 1]):.1f} px", fontsize=9)
    ax2 = fig.add_subplot(grid[1, :], sharex=ax)
    conf = row.get("confidence")
    if conf is not None:
        ax2.plot(x, conf, lw=0.7, color="tab:green", label="registration peak-to-sidelobe ratio")
        ax2.set_ylabel("confidence")
        ax2.set_ylim(0, max(float(np.nanmax(conf)) * 1.05, 1.0) if len(conf) else 1.0)
    noise, line = row.get("row_noise"), row.get("line_noise") or {}
    if noise is not None and np.any(noise):
        ax3 = ax2.twinx()
        ax3.plot(x, noise, lw=0.6, color="tab:purple", alpha=0.8)
        ax3.set_ylabel("line noise removed\n(row offsets' sd)", color="tab:purple", fontsize=8)
    text = (f"line noise {line.get('before', 0):.2f} -> {line.get('after', 0):.2f} (movie units, removed)"
            if line.get("removed") else f"no line noise to remove ({line.get('sampled', 0):.2f}, pixel noise alone "
                                        f"gives {line.get('floor', 0):.2f})" if line else "")
    ax2.set_title(f"registration confidence per frame; {text}", fontsize=9)
    ax2.legend(loc="lower right", fontsize=7)
    ax2.set_xlabel("time (s)" if timestamps is not None else "frame")
    fov, lens = row.get("fov"), row.get("lens")
    raw = row.get("mean_raw")
    panels = [("mean_raw", "raw mean, lens and defects"), ("mean_image", "mean, field of view"), ("max_image", "max"),
              ("std_image", "std"), ("correlation_image", "local correlation"), ("pnr_image", "peak-to-noise")]
    for i, (key, name) in enumerate(panels):
        image = raw if key == "mean_raw" else row.get(key)
        a = fig.add_subplot(grid[2, i])
        if image is None:
            a.set_axis_off()
            continue
        _show(a, np.asarray(image), name)
        mask = lens if key == "mean_raw" else fov
        if mask is not None and not np.all(np.asarray(mask)):
            a.contour(np.asarray(mask, float), levels=[0.5], colors="cyan", linewidths=0.8)
        defects = row.get("defects")
        if key == "mean_raw" and defects is not None and np.any(defects):
            yy, xx = np.nonzero(np.asarray(defects))
            a.plot(xx, yy, "r.", ms=2)
    return _save(fig, path, title)


def quality_figure(A, metrics: dict, max_image: np.ndarray, fov: np.ndarray | None, path: str | Path,
                   title: str = "", color_by: str = "r_value") -> Path:
    """Per-unit quality metrics: each metric's distribution over the units, and the units on the max
    projection coloured by one of them (with the field of view).

    Parameters
    ----------
    A : scopeline.core.footprints.Footprints
        The units' footprints.
    metrics : dict
        metric name -> float (units,) (:data:`scopeline.core.quality.METRICS`).
    max_image : numpy.ndarray
        float (height, width).
    fov : numpy.ndarray or None
        bool (height, width).
    path : str or pathlib.Path
    title : str
    color_by : str
        The metric that colours the units.

    Returns
    -------
    pathlib.Path
    """
    from scopeline.core.quality import METRICS

    names = [n for n in METRICS if n in metrics]
    fig = plt.figure(figsize=(15, 7))
    ax = fig.add_subplot(fig.add_gridspec(1, 1, **_margins(15, 7, left=0.1, right=8.2, top=0.6, bottom=0.35,
                                                           hspace=0, wspace=0))[0, 0])
    grid = fig.add_gridspec(3, 3, **_margins(15, 7, left=8.1, right=0.2, top=0.6, bottom=0.35, hspace=0.45,
                                             wspace=0.3))
    _show(ax, max_image, f"{len(A)} units, coloured by {color_by}")
    if fov is not None and not np.all(fov):
        ax.contour(np.asarray(fov, float), levels=[0.5], colors="cyan", linewidths=0.8)
    if len(A):
        c = A.centroids()
        sc = ax.scatter(c[:, 1], c[:, 0], c=np.asarray(metrics.get(color_by, np.zeros(len(A)))), s=14, cmap="viridis",
                        edgecolors="none")
        fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.02, label=color_by)
    for i, name in enumerate(names[:9]):
        a = fig.add_subplot(grid[i // 3, i % 3])
        v = np.asarray(metrics[name], float)
        v = v[np.isfinite(v)]
        a.hist(v, bins=30, color="0.4", histtype="stepfilled")  # one patch, not 30 bars
        better = "higher" if METRICS[name][1] else "lower"
        a.set_title(f"{name} ({better}: more cell-like)", fontsize=8)
        a.tick_params(labelsize=7)
    return _save(fig, path, title)


def _lines(ax, lines_per_unit, colors, linestyles=None, linewidth=0.8) -> None:
    """Every unit's contour lines in its colour, drawn as one collection (thousands of units stay fast)."""
    from matplotlib.collections import LineCollection

    segs, cols, styles = [], [], []
    for i, lines in enumerate(lines_per_unit):
        for line in lines:
            segs.append(line)
            cols.append(colors[i])
            styles.append(linestyles[i] if linestyles is not None else "solid")
    if segs:
        ax.add_collection(LineCollection(segs, colors=cols, linestyles=styles, linewidths=linewidth))


def _contours(ax, A, colors, ids, linestyles=None) -> None:
    """Each unit's half-peak contour in its colour, labelled with its id at its centroid."""
    k = len(A)
    centroids = A.centroids() if k else np.zeros((0, 2))
    _lines(ax, A.contours(), colors, linestyles)
    for i in range(k):
        cy, cx = centroids[i]
        if np.isfinite(cy):
            ax.text(cx, cy, str(ids[i]), color=colors[i], fontsize=6, ha="center", va="center")


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
    _contours(ax_img, A, [colors[i % 20] for i in range(k)], ids)
    ax_tr = fig.add_axes([0.5, 0.08, 0.48, 0.82])
    if k:
        pick = np.sort(np.argsort(-C.max(axis=1))[:n_traces])
        x = np.arange(C.shape[1]) if times is None else np.asarray(times)
        ticks = []
        for row, i in enumerate(pick):
            peak = max(float(C[i].max()), 1e-12)
            base = -row * 1.3
            ax_tr.plot(x, base + C[i] / peak, lw=0.7, color=colors[i % 20])
            s = S[i] / max(float(S[i].max()), 1e-12)
            nz = s > 0.02  # ticks 2% of the largest and up
            xs = np.asarray(x[nz], float)
            ticks.append(np.stack([np.stack([xs, np.full(len(xs), base - 0.3)], 1),
                                   np.stack([xs, base - 0.3 + 0.25 * s[nz]], 1)], 1))
            ax_tr.text(x[0], base + 0.55, f"unit {ids[i]} (peak {peak:.1f})", fontsize=7)
        from matplotlib.collections import LineCollection

        ax_tr.add_collection(LineCollection(np.concatenate(ticks), colors="k", linewidths=0.6))  # one array:
        # vlines made a masked array per tick, seconds for a long recording's
        ax_tr.set_yticks([])
        ax_tr.set_xlabel("time (s)" if times is not None else "frame")
        ax_tr.set_title("C (scaled to each unit's peak) and S (ticks)", fontsize=9)
    else:
        ax_tr.text(0.5, 0.5, "no unit", ha="center", va="center")
        ax_tr.set_axis_off()
    return _save(fig, path, title)


#: colours of a curation figure: decision, then descriptive labels (the first label a unit has)
_LABEL_COLORS = {"accepted": "lime", "rejected": "red", "merged": "0.6", "dendrite": "orange", "artifact": "magenta",
                 "duplicate": "deepskyblue", "neuropil": "sienna", "noise": "pink", "unsure": "yellow", "cell": "lime"}


def _unit_colour(accepted: bool, labels: tuple, merged: bool) -> str:
    if merged:
        return "merged"
    for lab in labels:
        if lab in _LABEL_COLORS and lab != "cell":
            return lab
    return "accepted" if accepted else "rejected"


def curation_figure(A, image: np.ndarray, unit_ids, decisions: list, metrics: dict, C: np.ndarray,
                    times: np.ndarray | None, path: str | Path, rules=None, title: str = "",
                    n_traces: int = 8, fov: np.ndarray | None = None, image_name: str = "max - mean projection") -> Path:
    """One curation: contours over a projection (the max - mean projection shows 1-photon cells best)
    coloured by decision and label (rejected units dashed), two metric scatter plots with the rule
    set's thresholds drawn, and the traces of rejected units with their reasons.

    Parameters
    ----------
    A : scopeline.core.footprints.Footprints
        Every unit the curation knows (CNMF's and merged ones).
    image : numpy.ndarray
        float (height, width): the projection drawn under the contours (``image_name`` says which).
    unit_ids : sequence of int
    decisions : list of scopeline.core.curation.UnitState
        Per unit, in ``A``'s order.
    metrics : dict
        metric name -> float (units,) (:data:`scopeline.core.curation.CURATION_METRICS`).
    C : numpy.ndarray
        float (units, frames) traces (movie units).
    times : numpy.ndarray or None
        float (frames,) seconds, else frames.
    path : str or pathlib.Path
    rules : scopeline.core.curation.CurationParams, optional
        The rule set at the chain's root (its thresholds are drawn).
    title : str
    n_traces : int
        Rejected units whose traces are shown (those of highest event_snr first).
    fov : numpy.ndarray, optional
        bool (height, width), drawn in cyan.

    Returns
    -------
    pathlib.Path
    """
    ids = np.asarray(unit_ids)
    k = len(A)
    kinds = [_unit_colour(d.accepted, d.labels, d.merged_into is not None) for d in decisions]
    accepted = np.array([d.accepted for d in decisions], bool)
    fig = plt.figure(figsize=(16, 9))
    wide = image.shape[1] > 1.4 * image.shape[0]  # a wide frame on top, beside nothing: readable contours
    grid = fig.add_gridspec(2, 3, width_ratios=[1, 1, 1.3] if wide else [2, 1, 1.4],
                            height_ratios=[1.3, 1] if wide else [1, 1],
                            **_margins(16, 9, left=0.8, right=0.2, top=0.6, bottom=0.5, hspace=0.3, wspace=0.2))
    ax = fig.add_subplot(grid[0, :2] if wide else grid[:, 0])
    scatter_axes = [fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])] if wide else \
        [fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])]
    _show(ax, image, f"{image_name}: {int(accepted.sum())} of {k} units accepted (rejected dashed)")
    if fov is not None and not np.all(fov):
        ax.contour(np.asarray(fov, float), levels=[0.5], colors="cyan", linewidths=0.8)
    _contours(ax, A, [_LABEL_COLORS[c] for c in kinds], ids, ["solid" if a else "dashed" for a in accepted])
    from matplotlib.lines import Line2D

    shown = [c for c in _LABEL_COLORS if c in kinds]
    ax.legend([Line2D([], [], color=_LABEL_COLORS[c]) for c in shown], shown, fontsize=7, loc="lower right",
              framealpha=0.6)
    thresholds = {}
    if rules is not None:
        for name, bound in rules.require.items():
            thresholds.setdefault(name, []).extend([(v, "--") for v in (bound.min, bound.max) if v is not None])
        for name, v in rules.accept_any.items():
            thresholds.setdefault(name, []).append((v, ":"))
    for i, (xname, yname) in enumerate((("event_snr", "r_value"), ("rel_area", "compactness"))):
        a = scatter_axes[i]
        x, y = (np.asarray(metrics.get(n, np.full(k, np.nan)), float) for n in (xname, yname))
        if xname == "event_snr" and np.nanmin(x, initial=np.inf) > 0 and np.nanmax(x, initial=0) > 20 * np.nanmin(x):
            a.set_xscale("log")  # event_snr spans decades
        for flag, colour, label in ((True, "green", "accepted"), (False, "red", "rejected")):
            sel = accepted == flag
            a.scatter(x[sel], y[sel], s=10, c=colour, label=f"{label} ({int(sel.sum())})", edgecolors="none")
        for v, style in thresholds.get(xname, []):
            a.axvline(v, color="k", ls=style, lw=0.8)
        for v, style in thresholds.get(yname, []):
            a.axhline(v, color="k", ls=style, lw=0.8)
        a.set_xlabel(xname, fontsize=8)
        a.set_ylabel(yname, fontsize=8)
        a.tick_params(labelsize=7)
        a.legend(fontsize=7)
        if i == 0:
            a.set_title("rule thresholds: -- required, : any accepts", fontsize=8)
    ax_tr = fig.add_subplot(grid[:, 2])
    rejected = [i for i in np.flatnonzero(~accepted) if decisions[i].merged_into is None]
    snr = np.asarray(metrics.get("event_snr", np.zeros(k)), float)
    pick = sorted(rejected, key=lambda i: -np.nan_to_num(snr[i]))[:n_traces]
    if pick:
        x = np.arange(C.shape[1]) if times is None else np.asarray(times)
        for row, i in enumerate(pick):
            peak = max(float(C[i].max()), 1e-12)
            ax_tr.plot(x, -row * 1.3 + C[i] / peak, lw=0.7, color="red")
            ax_tr.text(x[0], -row * 1.3 + 0.6, f"unit {ids[i]}: {decisions[i].reason}"[:90], fontsize=6.5)
        ax_tr.set_yticks([])
        ax_tr.set_xlabel("time (s)" if times is not None else "frame")
        ax_tr.set_title(f"rejected units ({len(rejected)}; {len(pick)} shown), C scaled to its peak", fontsize=9)
    else:
        ax_tr.text(0.5, 0.5, "no unit rejected", ha="center", va="center")
        ax_tr.set_axis_off()
    return _save(fig, path, title)


def registration_figure(result, path: str | Path, names: list | None = None, title: str = "") -> Path:
    """Cross-session registration: every session's aligned footprints over the reference frame (one
    colour per session), the cells found in two or more sessions (one colour per cell), the fitted
    distance and correlation models with the threshold, and how many cells were found in 1..N sessions.

    Parameters
    ----------
    result : scopeline.core.registration.RegistrationResult
    path : str or pathlib.Path
    names : list of str, optional
        Session names (default session 1..N).
    title : str

    Returns
    -------
    pathlib.Path
    """
    from scopeline.core.footprints import patch_contours
    from scopeline.core.registration import model_densities

    n = result.cells.shape[1]
    names = names or [f"session {s + 1}" for s in range(n)]
    h, w = result.shape
    fig = plt.figure(figsize=(16, 9), constrained_layout=True)
    grid = fig.add_gridspec(2, 3)
    colours = plt.cm.tab10(np.arange(n) % 10)

    def paint(ax, which, colour_of):
        ax.set_facecolor("black")
        lines, cols = [], []
        for s, (patches, boxes) in enumerate(result.aligned):
            for u in which(s):
                lines.append(patch_contours(patches[u], boxes[u]))
                cols.append(colour_of(s, u))
        _lines(ax, lines, cols, linewidth=0.6)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])

    ax = fig.add_subplot(grid[0, 0])
    paint(ax, lambda s: range(len(result.aligned[s][0])), lambda s, u: colours[s])
    ax.set_title("aligned footprints, one colour per session", fontsize=9)
    from matplotlib.lines import Line2D

    ax.legend([Line2D([], [], color=c) for c in colours], names, fontsize=6, loc="lower right", framealpha=0.5)
    ax = fig.add_subplot(grid[0, 1])
    multi = (result.cells >= 0).sum(axis=1) >= 2
    cell_colour = {}
    rng = np.random.default_rng(0)
    for c in np.flatnonzero(multi):
        for s in range(n):
            if result.cells[c, s] >= 0:
                cell_colour[(s, int(result.cells[c, s]))] = plt.cm.hsv(rng.random())
    paint(ax, lambda s: [u for (t, u) in cell_colour if t == s], lambda s, u: cell_colour[(s, u)])
    ax.set_title(f"{int(multi.sum())} cells found in 2+ sessions, one colour per cell", fontsize=9)
    ax = fig.add_subplot(grid[0, 2])
    found = (result.cells >= 0).sum(axis=1)
    counts = [int((found == k).sum()) for k in range(1, n + 1)]
    ax.bar(np.arange(1, n + 1), counts, color="0.4")
    for k, v in enumerate(counts, 1):
        ax.text(k, v, str(v), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("sessions a cell is found in")
    ax.set_ylabel("cells")
    ax.set_title(f"{len(result.cells)} distinct cells", fontsize=9)
    pairs, model = result.pairs, result.model
    threshold = model.get("p_same", 0.5)
    same = pairs["p_same"] >= threshold
    d = np.linspace(0, model["max_distance"], 200)
    r = np.linspace(0.001, 0.999, 200)
    dens = model_densities(model, d, r)
    for i, (values, x, key, label) in enumerate(((pairs["distance"], d, "d", "centroid distance (px)"),
                                                 (pairs["correlation"], r, "r", "footprint correlation"))):
        ax = fig.add_subplot(grid[1, i])
        bins = np.linspace(x[0], x[-1], 41)
        ax.hist(values, bins=bins, density=True, color="0.75", label=f"{len(values)} candidate pairs")
        ax.plot(x, dens[f"same_{key}"], color="green", label="model: same cell")
        ax.plot(x, dens[f"different_{key}"], color="red", label="model: different cells")
        ax.set_xlabel(label)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, 2])
    ax.scatter(pairs["distance"], pairs["correlation"], c=pairs["p_same"], s=3, cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_xlabel("centroid distance (px)")
    ax.set_ylabel("footprint correlation")
    fp, fn = result.error_rates["false_positive"], result.error_rates["false_negative"]
    ax.set_title(f"P_same (at {threshold:g} and up: {int(same.sum())} pairs); model's error rates: FP {fp:.3f}, "
                 f"FN {fn:.3f}",
                 fontsize=8)
    return _save(fig, path, title)
