"""Quality of units: per-unit quality metrics of a CNMF result, and accuracy against ground truth.

**Per-unit metrics** (:func:`unit_metrics`), computed for every unit of every result, without any
ground truth, so that curation can tell cells from artifacts (each documented with its formula):

- ``event_snr``: CaImAn's event exceptionality ``SNR_comp`` (Giovannucci et al. 2019, eLife,
  "Evaluating the quality of components"): how unlikely the unit's strongest run of ``N``
  consecutive frames is under its noise;
- ``r_value``: CaImAn's spatial consistency: correlation of the footprint with the movie at the
  unit's peaks;
- ``compactness``, ``eccentricity``, ``elongation``: shape of the footprint's half-peak region;
- ``rel_area``: that region's area over the expected cell's, ``pi (diameter / 2)^2``;
- ``pnr``: peak-to-noise ratio of the trace (Zhou et al. 2018, CNMF-E);
- ``skewness``: of the trace (activity is sparse and positive: cells' traces are right-skewed);
- ``outside_fov``: fraction of the footprint outside the field of view.

**Accuracy against ground truth** (:func:`accuracy`), with the Minian paper's metrics: estimated units
are matched to true ones by centroid distance (optimal assignment, Hungarian algorithm, pairs farther
than ``max_distance`` pixels unmatched); then precision, recall and F1 of the detection, and for the
matched pairs the Pearson correlation of footprints, of traces C, and of deconvolved activity S
with the true spikes summed in 5-frame bins (Dong et al. 2022, eLife).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = ["METRICS", "unit_metrics", "event_snr", "robust_mode", "spatial_consistency", "auc", "Accuracy",
           "match_units", "accuracy", "centroids"]

#: per-unit metric -> (description with formula and unit, whether larger means more cell-like)
METRICS: dict[str, tuple[str, bool]] = {
    "event_snr": ("CaImAn's SNR_comp: -Phi^-1 of the geometric mean tail probability of the strongest run of N "
                  "frames of YrA, z-scored by its mode and 3 x the noise below it (N = 0.4 s of frames)", True),
    "r_value": ("CaImAn's spatial consistency: Pearson correlation, over the footprint's box, of the footprint with "
                "the movie's mean at the unit's peak frames minus its mean over all frames", True),
    "compactness": ("4 pi area / perimeter^2 of the footprint's half-peak region (1: a disk)", True),
    "eccentricity": ("sqrt(1 - minor / major) of the half-peak region's weighted covariance (0: a disk)", False),
    "elongation": ("sqrt(major / minor) of the half-peak region's weighted covariance (1: a disk)", False),
    "rel_area": ("half-peak area of the footprint over pi (diameter / 2)^2 of the expected cell", True),
    "pnr": ("(max - mode) of YrA over its noise standard deviation sn", True),
    "skewness": ("sample skewness of YrA", True),
    "outside_fov": ("fraction of the footprint's weight outside the field of view", False),
}


def centroids(A: np.ndarray) -> np.ndarray:
    """float64 (units, 2): weighted (y, x) centre of dense footprints (units, height, width)."""
    A = np.asarray(A, np.float64)
    h, w = A.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    mass = A.reshape(len(A), -1).sum(axis=1)
    mass = np.where(mass > 0, mass, np.nan)
    return np.stack([(A * yy).reshape(len(A), -1).sum(1) / mass, (A * xx).reshape(len(A), -1).sum(1) / mass], axis=1)


def match_units(est_xy: np.ndarray, true_xy: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching by centroid distance; returns (est index, true index) pairs."""
    if len(est_xy) == 0 or len(true_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = np.linalg.norm(est_xy[:, None, :] - true_xy[None, :, :], axis=2)
    d = np.where(np.isfinite(d), d, 1e9)
    big = max_distance * 1e3 + 1e3
    rows, cols = linear_sum_assignment(np.where(d <= max_distance, d, big))
    ok = d[rows, cols] <= max_distance
    return rows[ok], cols[ok]


def robust_mode(x: np.ndarray) -> float:
    """The half-sample mode of a sample (Bickel & Fruehwirth 2006): repeatedly keep the half of the
    sorted values with the smallest range, then the mean of the last two or three. Robust to the
    positive transients of a calcium trace, which pull its mean and median up.

    Parameters
    ----------
    x : array-like
        Any shape, flattened; units of the data (e.g. movie units for a trace).

    Returns
    -------
    float
        The mode, in the data's units (NaN for an empty sample).
    """
    v = np.sort(np.asarray(x, np.float64).ravel())
    v = v[np.isfinite(v)]
    while len(v) > 3:
        half = (len(v) + 1) // 2
        widths = v[half - 1:] - v[: len(v) - half + 1]
        i = int(np.argmin(widths))
        v = v[i: i + half]
    return float(v.mean()) if len(v) else 0.0


def _baseline_noise(y: np.ndarray) -> tuple[float, float]:
    """A trace's baseline (:func:`robust_mode`) and its noise: the root mean square of its deviations
    below the baseline (activity only goes up)."""
    md = robust_mode(y)
    below = np.minimum(y - md, 0)
    count = np.count_nonzero(below)
    return md, (float(np.sqrt((below**2).sum() / count)) if count else 0.0)


def event_snr(traces: np.ndarray, n_frames: int = 5, sigma_factor: float = 3.0) -> np.ndarray:
    """Event exceptionality of traces: CaImAn's ``SNR_comp`` (Giovannucci et al. 2019, eLife).

    For each trace: its baseline is the :func:`robust_mode`; its noise ``sd`` the root mean square
    of its deviations below the mode (activity only goes up); every frame's tail probability
    ``P(z)`` with ``z = (y - mode) / (sigma_factor sd)`` under a standard normal; the strongest event
    is the run of ``n_frames`` consecutive frames with the smallest product of tail probabilities; the
    score is the normal quantile of that run's geometric mean probability, ``-Phi^-1(exp(mean log P))``.
    Noise alone scores about 0; CaImAn accepts units from about 2 (its ``min_SNR``).

    Parameters
    ----------
    traces : numpy.ndarray
        float (units, frames): the raw traces (YrA: C plus residual), any units.
    n_frames : int
        Frames of an event (CaImAn: the indicator's decay time in frames).
    sigma_factor : float
        The noise is scaled by this (CaImAn's 3), so the score reads in ``sigma_factor`` noise sds.

    Returns
    -------
    numpy.ndarray
        float32 (units,); 0 for a flat trace.
    """
    from scipy.special import log_ndtr, ndtri_exp

    traces = np.atleast_2d(np.asarray(traces))
    out = np.zeros(len(traces), np.float32)
    n = max(1, min(int(n_frames), traces.shape[1]))
    for i, y in enumerate(traces):
        y = np.asarray(y, np.float64)  # a row at a time: memory does not grow with units x frames
        md, sd = _baseline_noise(y)
        if sd <= 0:
            continue
        logp = log_ndtr(-(y - md) / (sigma_factor * sd))  # log of the upper tail probability
        run = np.convolve(logp, np.ones(n), mode="valid") / n
        out[i] = float(-ndtri_exp(run.min()))  # Phi^-1(exp(x)), exact for very small probabilities
    return out


def spatial_consistency(movie, A, YrA: np.ndarray, max_events: int = 50, z_events: float = 3.0,
                        block_frames: int = 100, progress=None) -> np.ndarray:
    """CaImAn's spatial consistency ``r_value`` of every unit (Giovannucci et al. 2019, eLife): the
    Pearson correlation, over the unit's footprint box, between its footprint and the movie's mean at
    the unit's peak frames minus the movie's mean over all frames (a cell's activity looks like its
    footprint; a unit fitted to a stripe, a moving edge or a neighbour's activity does not).

    Peak frames: up to ``max_events`` frames of largest YrA among those ``z_events`` noise sds above
    its mode (at least the 3 largest). One pass over the movie.

    Parameters
    ----------
    movie : array-like
        (frames, height, width).
    A : scopeline.core.footprints.Footprints
    YrA : numpy.ndarray
        float (units, frames).
    max_events, z_events : int, float
    block_frames : int
        Frames read at once.
    progress : callable, optional
        Called with frames read.

    Returns
    -------
    numpy.ndarray
        float32 (units,) in [-1, 1]; 0 when undefined (a flat footprint or event image).
    """
    from .footprints import frame_blocks

    k = len(A)
    out = np.zeros(k, np.float32)
    if k == 0:
        return out
    n = movie.shape[0]
    peaks = []  # each unit's peak frames: at most max_events (a (units, frames) mask would grow with frames)
    for y in YrA:  # a row at a time: a float64 copy of YrA would grow with the recording
        y = np.asarray(y, np.float64)
        md, sd = _baseline_noise(y)
        order = np.argsort(-y)
        strong = order[: max_events][(y[order[: max_events]] - md) > z_events * sd] if sd > 0 else order[:0]
        peaks.append(strong if len(strong) >= 3 else order[:3])
    counts = np.array([len(at) for at in peaks])
    frame = np.concatenate(peaks).astype(np.int64)
    by_frame = np.argsort(frame, kind="stable")
    unit, frame = np.repeat(np.arange(k), counts)[by_frame], frame[by_frame]
    sy, sx = A.patches.shape[1:]
    at_events = np.zeros((k, sy, sx))
    total = np.zeros(A.shape)
    for a, frames in frame_blocks(movie, block_frames, progress):
        total += frames.sum(axis=0)
        lo, hi = np.searchsorted(frame, [a, a + len(frames)])
        events = np.zeros((k, len(frames)), np.float32)  # this block's part of every unit's peak frames
        events[unit[lo:hi], frame[lo:hi] - a] = 1
        A.correlate(frames, events, at_events)
    mean = total / max(n, 1)
    for i in range(k):
        ys, xs = A._slices(i)
        img = at_events[i, : ys.stop - ys.start, : xs.stop - xs.start] / counts[i] - mean[ys, xs]
        fp = A.patches[i, : ys.stop - ys.start, : xs.stop - xs.start].astype(np.float64)
        a_, b_ = fp.ravel() - fp.mean(), img.ravel() - img.mean()
        den = np.linalg.norm(a_) * np.linalg.norm(b_)
        out[i] = float(a_ @ b_ / den) if den > 0 else 0.0
    return out


def unit_metrics(movie, A, YrA: np.ndarray, sn: np.ndarray, *, diameter: float, fov: np.ndarray | None = None,
                 fps: float | None = None, event_seconds: float = 0.4,
                 block_frames: int = 100, progress=None) -> dict[str, np.ndarray]:
    """Every per-unit quality metric of :data:`METRICS` for a CNMF result.

    Parameters
    ----------
    movie : array-like
        (frames, height, width): the motion-corrected movie the result was fitted to (one pass).
    A : scopeline.core.footprints.Footprints
        Footprints (peak 1).
    YrA : numpy.ndarray
        float (units, frames): raw traces (C plus residual), movie units.
    sn : numpy.ndarray
        float (units,): trace noise standard deviations, movie units.
    fov : numpy.ndarray, optional
        bool (height, width): the field of view (None: the whole frame).
    diameter : float
        Expected cell diameter, pixels (initialization's ``diameter``).
    fps : float, optional
        Frame rate, Hz: an event lasts ``event_seconds`` (5 frames when None).
    event_seconds : float
        Duration of a calcium event for ``event_snr``, seconds (0.4 s: GCaMP6f's decay).
    block_frames : int
        Frames read at once.
    progress : callable, optional
        Called with frames read (one pass).

    Returns
    -------
    dict
        metric name -> float32 (units,).
    """
    from scipy.stats import skew


    YrA = np.asarray(YrA)  # its own dtype; each row in float64 in turn (a float64 copy grows with frames)
    k = len(A)
    n_event = 5 if not fps else max(2, int(np.ceil(fps * event_seconds)))
    st = A.shape_stats()
    modes, peaks, skewness = np.zeros(k), np.zeros(k), np.zeros(k)
    for i, y in enumerate(YrA):
        y = np.asarray(y, np.float64)
        modes[i], peaks[i] = robust_mode(y), float(y.max(initial=0))
        if len(y) > 2:
            with np.errstate(invalid="ignore", divide="ignore"):
                skewness[i] = np.nan_to_num(skew(y))
    sn = np.asarray(sn, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pnr = np.where(sn > 0, (peaks - modes) / np.where(sn > 0, sn, 1), 0) if k else np.zeros(0)
    out = {
        "event_snr": event_snr(YrA, n_event) if k else np.zeros(0, np.float32),
        "r_value": spatial_consistency(movie, A, YrA, block_frames=block_frames, progress=progress),
        "compactness": st["compactness"], "eccentricity": st["eccentricity"], "elongation": st["elongation"],
        "rel_area": st["half_area"] / (np.pi * (diameter / 2) ** 2),
        "pnr": pnr, "skewness": skewness,
        "outside_fov": A.dot((~np.asarray(fov, bool)).astype(np.float64)) / np.maximum(A.patches.sum(axis=(1, 2)), 1e-12)
        if fov is not None and k else np.zeros(k),
    }
    return {name: np.nan_to_num(np.asarray(v, np.float32)) for name, v in out.items()}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of a score separating two groups (the probability that a random member
    of ``positive`` scores above a random member of ``negative``, ties counting half): the
    Mann-Whitney U statistic over the product of the group sizes, from the ranks of the pooled scores.

    Parameters
    ----------
    positive, negative : array-like
        float (n,), (m,): the scores of each group (e.g. a metric of matched and unmatched units).

    Returns
    -------
    float
        In [0, 1], 0.5 for no separation; NaN if a group is empty.
    """
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _corr_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1), 0.0)


@dataclass
class Accuracy:
    """Detection and matched-pair accuracy.

    Attributes
    ----------
    n_true, n_est, n_matched : int
    precision, recall, f1 : float
    footprint_corr, trace_corr, spike_corr : float
        Median over matched pairs of the Pearson correlation of footprints, of C with the true
        calcium, and of S with the true spikes in 5-frame bins (NaN if nothing matched).
    """

    n_true: int
    n_est: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    footprint_corr: float
    trace_corr: float
    spike_corr: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def accuracy(A: np.ndarray, C: np.ndarray, S: np.ndarray, A_true: np.ndarray, C_true: np.ndarray,
             S_true: np.ndarray, offset: tuple[float, float] = (0.0, 0.0), max_distance: float = 5.0,
             bin_frames: int = 5, ignore: np.ndarray | None = None) -> Accuracy:
    """Minian-paper accuracy of estimated units against the truth.

    Parameters
    ----------
    A, A_true : numpy.ndarray
        float (units, height, width): estimated and true footprints.
    C, C_true, S, S_true : numpy.ndarray
        float (units, frames): traces and deconvolved activity / spikes (same frames).
    offset : (float, float)
        (dy, dx) pixels added to the true footprints' positions to bring them into the estimate's
        frame (the motion-corrected movie sits at the template's position).
    max_distance : float
        Centroid distance for a match, pixels.
    bin_frames : int
        Bin of the S-versus-spikes correlation, frames.
    ignore : numpy.ndarray, optional
        bool (true units,): cells that count neither way (e.g. cells seen through the lens in only some
        frames): an estimate matched to one is left out of the estimates, and the cell out of the truth.

    Returns
    -------
    Accuracy
    """
    A_true = np.asarray(A_true, np.float32)
    if any(offset):
        A_true = np.stack([ndimage.shift(a, offset, order=1) for a in A_true]) if len(A_true) else A_true
    ei, ti = match_units(centroids(A), centroids(A_true), max_distance)
    n_est, n_true = len(A), len(A_true)
    if ignore is not None and np.any(ignore):
        ignore = np.asarray(ignore, bool)
        drop = ignore[ti]
        n_est -= int(drop.sum())
        n_true -= int(ignore.sum())
        ei, ti = ei[~drop], ti[~drop]
    m = len(ei)
    precision = m / n_est if n_est else 0.0
    recall = m / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    if m == 0:
        nan = float("nan")
        return Accuracy(n_true, n_est, 0, precision, recall, f1, nan, nan, nan)
    fc = _corr_rows(np.asarray(A, np.float64)[ei].reshape(m, -1), A_true[ti].reshape(m, -1).astype(np.float64))
    tc = _corr_rows(np.asarray(C, np.float64)[ei], np.asarray(C_true, np.float64)[ti])
    t = (S.shape[1] // bin_frames) * bin_frames

    def binned(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64)[:, :t].reshape(len(x), -1, bin_frames).sum(axis=2)

    sc = _corr_rows(binned(np.asarray(S)[ei]), binned(np.asarray(S_true)[ti]))
    return Accuracy(n_true, n_est, m, precision, recall, f1, float(np.median(fc)), float(np.median(tc)),
                    float(np.median(sc)))
