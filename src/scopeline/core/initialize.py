"""Seed-based initialization of CNMF on a motion-corrected, background-removed 1-photon movie.

Follows Minian (Dong et al. 2022, eLife) and MIN1PIPE (Lu et al. 2018):

1. **Seeds**: local maxima (window = expected cell diameter) of max projections of frame subsets,
   either rolling windows of ``window_frames`` (half overlapping; at most ``max_windows`` of them) or
   random subsets; a maximum counts
   when it stands ``min_contrast`` noise units above the window's minimum. Seeds closer than 2
   pixels are one seed.
2. **Refinement** of each seed's trace (the movie at its pixel): peak-to-noise ratio, the peak of the
   low-passed trace (below ``cutoff_hz``) over the standard deviation of its high-passed part
   (``pnr_threshold``); a Kolmogorov-Smirnov test of normality (a trace of noise alone is normal,
   ``ks_alpha``); a seed whose trace follows the level of its own row is on line noise
   (``max_row_corr``); optionally a two-component Gaussian mixture on PNR keeping the high component.
3. **Merging** of seeds closer than ``merge_distance`` whose low-passed traces correlate above
   ``merge_corr`` (the brightest seed stays).
4. **Footprints** A_init: in a window of ``footprint_radius`` around each seed, the pixels whose
   traces correlate with the seed's above ``corr_threshold`` (connected to the seed), weighted by
   their regression on the seed trace. Footprints that are not cell-shaped (elongated like a stripe
   of line noise or an arc of a moving lens edge, far larger or smaller than the expected cell,
   ragged) are removed (:func:`scopeline.core.footprints.not_cell_shaped`). **Traces** C_init: the
   seed traces minus their baseline. **Background**: b = the mean image, f = each frame's projection on it.

Each step records which seeds it removed, so a user can see why a cell was missed. Three passes
over the movie, in blocks of frames; memory is the seed traces (seeds x frames) plus a few frames.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import numba
import numpy as np
from pydantic import Field
from scipy import ndimage
from scipy.spatial import cKDTree

from scopeline import executor

from .footprints import (Footprints, ShapeParams, components, frame_blocks, frame_dots, not_cell_shaped,
                         window_moments)
from .params import StageParams
from .scratch import ColumnWriter, Scratch, row_blocks, select_rows, take_rows

__all__ = ["PRESETS", "InitParams", "InitResult", "initialize", "valid_region", "pnr_scale",
           "find_seeds", "seed_pnr", "seed_ks", "merge_seeds"]


class InitParams(StageParams):
    """Initialization parameters (pixels, frames, Hz); JSON round trip via ``model_dump_json``."""

    diameter: int = Field(8, ge=3, le=100, description="Expected cell diameter, pixels (seed window: two seeds "
                                                      "closer than half of it cannot both be local maxima).")
    seed_method: Literal["rolling", "random"] = Field(
        "rolling", description="Frame subsets for max projections: rolling windows or random subsets.")
    window_frames: int = Field(200, ge=10, le=100000, description="Frames per max projection (more, shorter "
                               "windows separate neighbouring cells that fire at different times: 500 frames lost "
                               "dim cells beside bright ones, recall 0.90 against 0.94 with 200, on simulations with "
                               "heterogeneous brightness; 100 found more (realistic simulator at signal 0.6, with "
                               "pnr_threshold 3.5: recall 0.966 against 0.918) but on the real CA1 recording 110-118 "
                               "units against 99 where ~75 cells show, units nearer the edge, and 85-87% of them "
                               "found again with line noise added against 92%: real data decided for 200).")
    max_windows: int = Field(40, ge=1, le=10000, description="At most this many rolling windows (longer recordings get "
                             "longer windows), so the candidate seeds do not grow with the recording.")
    n_random: int = Field(20, ge=1, le=1000, description="Random subsets (seed_method 'random').")
    min_contrast: float = Field(3.0, ge=0, description="Local maximum minus the window's minimum, in noise "
                                                         "standard deviations, for a seed.")
    seed_smooth: float = Field(1.0, ge=0, le=10, description="Gaussian smoothing of the max projections before their "
                               "local maxima are taken, pixels: on flat-topped 8-bit data the maxima moved and came "
                               "and went with changes of a tenth of a unit (0: none).")
    cutoff_hz: float = Field(1.0, gt=0, description="Low/high-pass split of seed traces for PNR, Hz.")
    drift_hz: float = Field(0.1, ge=0, description="Slower changes of a seed trace (background drift) do not "
                                                    "count as signal for PNR, Hz (0: off).")
    pnr_threshold: float = Field(4.5, ge=0, description="Minimum peak-to-noise ratio of a seed in 1,000 frames; "
                                 "scaled for other lengths like the expected peak of noise, sqrt(2 ln N). (5.5 lost "
                                 "dim cells: recall 0.85 against 0.92 on realistic simulations at signal 0.6; the "
                                 "row, shape and spatial-consistency tests keep precision at 0.99.)")
    ks_alpha: Optional[float] = Field(0.05, gt=0, lt=1, description="Seeds whose trace is normal at this "
                                                                      "significance are noise (None: off).")
    max_row_corr: float = Field(0.6, gt=0, le=1, description="Seeds whose trace correlates with their own row's "
                                "level (the mean of the row outside the footprint window) above this sit on line "
                                "noise, not on a cell (measured: 32 of 33 seeds kept otherwise on the real wireless "
                                "recording score above it, 1 of 252 seeds of a simulated realistic recording and 5 of "
                                "270 of the real CA1 one; 1: off).")
    gmm: bool = Field(False, description="Also keep only the high component of a 2-Gaussian mixture on PNR.")
    merge_distance: float = Field(6.0, ge=0, description="Seeds closer than this (pixels) may merge.")
    merge_corr: float = Field(0.95, ge=-1, le=1, description="... if their low-passed traces correlate above this "
                                                             "(overlapping cells share much of their traces).")
    border_pixels: int = Field(0, ge=0, le=200, description="Seeds within this many pixels of the frame's edge are "
                               "not used (CaImAn's border_pix): for movies registered before scopeline saw them, "
                               "whose edges move with the earlier shifts.")
    footprint_radius: int = Field(12, ge=1, le=200, description="Half window of a footprint around its seed, pixels.")
    corr_threshold: float = Field(0.7, ge=0, le=1, description="Pixels correlating with the seed above this form "
                                                                 "the initial footprint.")
    shape: ShapeParams = Field(default_factory=ShapeParams, description="Seeds whose initial footprint is not "
                               "cell-shaped are removed (area relative to the expected cell of this diameter).")
    block_frames: int = Field(100, ge=10, le=5000, description="Frames read at once, at most (memory: "
                              "block_frames x height x width x 4 bytes, a few times; a block holds no more than "
                              "64 MiB, footprints.MAX_BLOCK_BYTES).")
    random_seed: int = Field(0, description="Random generator seed (random subsets).")


#: shipped parameter sets: Minian's steps with defaults measured on simulated recordings
#: (benchmarks/cnmf.py), and CNMF-E-like (stricter seeds: higher peak-to-noise and footprint
#: correlation, no normality test)
PRESETS = {
    "minian": InitParams(),
    "cnmfe": InitParams(pnr_threshold=8.0, corr_threshold=0.8, ks_alpha=None, merge_corr=0.7),
    # movies registered before scopeline saw them: their edges move with the earlier shifts
    "registered": InitParams(border_pixels=10),
}


@dataclass
class InitResult:
    """Outcome of :func:`initialize`.

    Attributes
    ----------
    seeds : numpy.ndarray
        int32 (seeds, 2): every candidate seed's (y, x), pixels.
    removed_by : list of str
        Per seed: ``""`` (kept, one unit each in order), ``"pnr"``, ``"ks"``, ``"stripe"`` (follows its
        row: line noise), ``"gmm"``, ``"merge"``,
        ``"footprint"`` (no pixel passed the correlation threshold) or ``"shape"`` (the footprint is not
        cell-shaped: :func:`scopeline.core.footprints.not_cell_shaped`).
    pnr, ks_p : numpy.ndarray
        float32 (seeds,): peak-to-noise ratio and KS p-value of each seed's trace.
    A : Footprints
        Initial footprints of the kept seeds (units).
    C : numpy.ndarray
        float32 (units, frames): initial traces.
    b : numpy.ndarray
        float32 (height, width): background image.
    f : numpy.ndarray
        float32 (frames,): background trace.
    noise : float
        Movie noise standard deviation (median over pixels), movie units.
    """

    seeds: np.ndarray
    removed_by: list
    pnr: np.ndarray
    ks_p: np.ndarray
    A: Footprints
    C: np.ndarray
    b: np.ndarray
    f: np.ndarray
    noise: float
    seconds: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ seeds


def _local_maxima(img: np.ndarray, diameter: int, min_height: float, smooth: float = 0.0) -> np.ndarray:
    """(n, 2) pixels that are the maximum of their diameter-window and exceed its minimum by min_height,
    in the image smoothed by a Gaussian of ``smooth`` pixels (flat tops of 8-bit data and single noisy
    pixels then do not decide where, or whether, a maximum is)."""
    if smooth > 0:
        img = ndimage.gaussian_filter(img, smooth, mode="nearest")
    mx = ndimage.maximum_filter(img, size=diameter, mode="nearest")
    mn = ndimage.minimum_filter(img, size=diameter, mode="nearest")
    peak = (img == mx) & (mx - mn > min_height)
    return np.argwhere(peak)


def _frame_noise(frames: np.ndarray) -> float:
    """Median over pixels of the frame-to-frame difference's standard deviation / sqrt(2)."""
    d = np.diff(frames, axis=0)
    return float(np.median(np.sqrt((d**2).mean(axis=0) / 2))) if len(d) else 0.0


def find_seeds(movie, p: InitParams, progress: Optional[Callable[[int], None]] = None,
               valid: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Candidate seeds from max projections of frame subsets (first pass over the movie).

    ``valid``: bool (height, width), where seeds may lie (None: everywhere).

    Returns
    -------
    seeds : numpy.ndarray
        int32 (n, 2): (y, x) pixels.
    mean : numpy.ndarray
        float32 (height, width): the mean image (background).
    noise : float
        Movie noise (median over pixels of the frame-difference standard deviation / sqrt 2).
    """
    n, h, w = movie.shape
    rng = np.random.default_rng(p.random_seed)
    half = max(1, p.window_frames // 2, int(np.ceil(n / max(p.max_windows, 1))))
    total = np.zeros((h, w), np.float64)
    noises = []
    projections = []
    if p.seed_method == "random":
        subset_max = np.full((p.n_random, h, w), -np.inf, np.float32)
    prev_half, cur, cur_n = None, np.full((h, w), -np.inf, np.float32), 0
    for a, frames in frame_blocks(movie, p.block_frames, progress):
        total += frames.sum(axis=0)
        if len(noises) < 20:
            noises.append(_frame_noise(frames))
        if p.seed_method == "random":
            ids = rng.integers(0, p.n_random, len(frames))
            for k in np.unique(ids):
                np.maximum(subset_max[k], frames[ids == k].max(axis=0), out=subset_max[k])
            continue
        i = 0
        while i < len(frames):
            take = min(half - cur_n, len(frames) - i)
            np.maximum(cur, frames[i: i + take].max(axis=0), out=cur)
            cur_n += take
            i += take
            if cur_n == half:
                projections.append(cur if prev_half is None else np.maximum(prev_half, cur))
                prev_half, cur, cur_n = cur, np.full((h, w), -np.inf, np.float32), 0
    if p.seed_method == "random":
        projections = [m for m in subset_max if np.isfinite(m).all()]
    elif cur_n or not projections:
        projections.append(cur if prev_half is None else np.maximum(prev_half, cur))
    noise = float(np.median(noises)) if noises else 0.0
    found = np.concatenate([_local_maxima(m, p.diameter, p.min_contrast * noise, p.seed_smooth) for m in projections]) \
        if projections else np.zeros((0, 2), int)
    if valid is not None and len(found):
        found = found[valid[found[:, 0], found[:, 1]]]
    return _dedupe(found, projections), (total / max(n, 1)).astype(np.float32), noise


def _dedupe(found: np.ndarray, projections: list) -> np.ndarray:
    """Seeds within 2 pixels of each other are one: the one found most often (ties: brightest) stays."""
    if len(found) == 0:
        return np.zeros((0, 2), np.int32)
    uniq, counts = np.unique(found, axis=0, return_counts=True)
    peak = np.max([m[uniq[:, 0], uniq[:, 1]] for m in projections], axis=0)
    order = np.lexsort((-peak, -counts))
    tree = cKDTree(uniq)
    taken = np.zeros(len(uniq), bool)
    keep = []
    for i in order:
        if taken[i]:
            continue
        keep.append(i)
        taken[tree.query_ball_point(uniq[i], r=2.0)] = True
    return uniq[np.sort(keep)].astype(np.int32)


# ------------------------------------------------------------------------------ refinement


def _split(traces: np.ndarray, fps: float, cutoff_hz: float, drift_hz: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Signal and noise parts of traces (seeds, frames) by zero-phase Butterworth filters: below
    ``cutoff_hz`` (and above ``drift_hz`` when given: slow background drifts are not cells), and the
    rest above ``cutoff_hz``."""
    from scipy import signal
    if traces.shape[1] <= 15:
        return traces.copy(), np.zeros_like(traces)
    nyq = fps / 2
    low = signal.sosfiltfilt(signal.butter(2, min(cutoff_hz / nyq, 0.99), btype="low", output="sos"), traces,
                             axis=1).astype(np.float32)
    high = traces - low
    if 0 < drift_hz < cutoff_hz and traces.shape[1] >= fps / drift_hz:  # at least one period of the drift
        low = low - signal.sosfiltfilt(signal.butter(2, drift_hz / nyq, btype="low", output="sos"), low,
                                       axis=1).astype(np.float32)
    return low, high


def seed_pnr(traces: np.ndarray, fps: float, cutoff_hz: float, drift_hz: float = 0.0) -> np.ndarray:
    """Peak-to-noise ratio of seed traces: (max - median) of the trace band-passed between
    ``drift_hz`` and ``cutoff_hz`` over the robust standard deviation (1.4826 MAD) of the part above
    ``cutoff_hz``.

    Parameters
    ----------
    traces : numpy.ndarray or zarr.Array
        (seeds, frames), any float dtype; read 256 seeds at a time.
    fps : float
        Frame rate, Hz.
    cutoff_hz : float
        Split frequency, Hz.
    drift_hz : float
        Slower changes (background drift) are not signal, Hz; 0: keep them.

    Returns
    -------
    numpy.ndarray
        float32 (seeds,); 0 where the noise is 0.
    """
    out = np.zeros(traces.shape[0], np.float32)
    for a, block in row_blocks(traces):
        low, high = _split(block, fps, cutoff_hz, drift_hz)
        peak = low.max(axis=1) - np.median(low, axis=1)
        mad = 1.4826 * np.median(np.abs(high - np.median(high, axis=1, keepdims=True)), axis=1)
        out[a: a + len(block)] = np.where(mad > 0, peak / np.where(mad > 0, mad, 1), 0)
    return out


def pnr_scale(n_frames: int, fps: float, cutoff_hz: float, reference: int = 1000) -> float:
    """Factor on the PNR threshold for a recording of ``n_frames`` instead of ``reference`` frames.

    The peak of noise alone grows with the number of independent samples N like sqrt(2 ln N)
    (Gaussian extremes), and a low-passed trace has about ``N = frames x 2 cutoff / fps`` of them;
    without this, long recordings let more noise seeds through (measured: precision 0.98 at 1,000
    frames, 0.88 at 8,000 with a fixed threshold).
    """
    band = min(1.0, 2 * cutoff_hz / fps)

    def peak(n: float) -> float:
        return float(np.sqrt(2 * np.log(max(n * band, 2.0))))

    return peak(n_frames) / peak(reference)


def seed_ks(traces) -> np.ndarray:
    """float32 (seeds,): p-values of a Kolmogorov-Smirnov test of each standardized trace (rows of a
    (seeds, frames) numpy or Zarr array) against a normal distribution (small: not noise alone).

    The statistic D of each row is computed for a block of rows at once (one sort per row). The p-value
    is the exact two-sided one (scipy's ``kstwo``) up to 1,000 frames, and beyond it Stephens' (1970)
    approximation ``Q_KS((sqrt(n) + 0.12 + 0.11 / sqrt(n)) D)`` of Kolmogorov's limit: within 0.5% of
    the exact value near p = 0.05 from 1,000 frames on (0.3% at 2,000), where the exact one costs 9 ms
    per trace at 2,000 frames and 200 ms at 36,000 (SciPy 1.16), minutes for a session's seeds.
    """
    from scipy import special, stats
    out = np.ones(traces.shape[0], np.float32)
    n = traces.shape[1]
    i = np.arange(1, n + 1, dtype=np.float64)
    for a, block in row_blocks(traces):
        y = block.astype(np.float64)
        y -= y.mean(axis=1, keepdims=True)
        sd = y.std(axis=1)
        ok = sd > 0
        if not ok.any():
            continue
        z = np.sort(y[ok] / sd[ok, None], axis=1)
        cdf = special.ndtr(z)
        d = np.maximum((i / n - cdf).max(axis=1), (cdf - (i - 1) / n).max(axis=1))
        if n <= 1000:
            pvalue = stats.kstwo.sf(d, n)
        else:
            en = np.sqrt(n)
            pvalue = special.kolmogorov((en + 0.12 + 0.11 / en) * d)
        out[a + np.flatnonzero(ok)] = np.clip(pvalue, 0, 1)
    return out


def _gmm_high(values: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Members of the higher component of a 2-Gaussian mixture fitted (EM) to 1-D values."""
    from scipy import stats
    x = np.asarray(values, np.float64)
    if len(x) < 4 or np.ptp(x) == 0:
        return np.ones(len(x), bool)
    mu = np.percentile(x, [25, 75]).astype(float)
    sd = np.full(2, x.std() / 2 + 1e-12)
    pi = np.array([0.5, 0.5])
    for _ in range(iterations):
        dens = pi * stats.norm.pdf(x[:, None], mu, sd)
        resp = dens / np.maximum(dens.sum(axis=1, keepdims=True), 1e-300)
        nk = resp.sum(axis=0) + 1e-12
        mu = (resp * x[:, None]).sum(axis=0) / nk
        sd = np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / nk) + 1e-12
        pi = nk / len(x)
    hi = int(np.argmax(mu))
    return resp[:, hi] > 0.5


def merge_seeds(seeds: np.ndarray, traces: np.ndarray, fps: float, p: InitParams,
                scratch: Optional[Scratch] = None) -> np.ndarray:
    """Indices (into ``seeds``) removed by merging: seeds within ``merge_distance`` whose low-passed
    traces correlate above ``merge_corr`` form groups (connected components); the seed with the
    highest low-passed peak of each group stays.

    ``traces``: (seeds, frames). The low-passed traces of the seeds that have a neighbour are held in
    ``scratch`` (memory or disk) and their correlations summed over blocks of frames, so memory does
    not grow with the recording.
    """
    if len(seeds) < 2 or p.merge_distance <= 0:
        return np.zeros(0, int)
    pairs = cKDTree(seeds).query_pairs(p.merge_distance, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, int)
    near = np.unique(pairs)
    pi, pj = np.searchsorted(near, pairs[:, 0]), np.searchsorted(near, pairs[:, 1])
    n = traces.shape[1]
    own = scratch is None
    scratch = scratch or Scratch()
    try:
        z = scratch.array((len(near), n), np.float32)
        peak = np.zeros(len(seeds))
        for a, block in row_blocks(traces, near):
            low, _ = _split(block, fps, p.cutoff_hz)
            peak[near[a: a + len(block)]] = low.max(axis=1)
            low -= low.mean(axis=1, keepdims=True)
            low /= np.maximum(np.linalg.norm(low, axis=1, keepdims=True), 1e-12)
            z[a: a + len(block)] = low
        corr = np.zeros(len(pairs))
        for t in range(0, n, 1000):
            zt = np.asarray(z[:, t: t + 1000], np.float32)
            corr += np.einsum("ij,ij->i", zt[pi], zt[pj])
    finally:
        if own:
            scratch.close()
    groups = components(len(seeds), [tuple(e) for e in pairs[corr > p.merge_corr]])
    removed = [i for members in groups if len(members) > 1
               for i in members if i != max(members, key=lambda m: peak[m])]
    return np.array(sorted(removed), int)


# ------------------------------------------------------------------------------ footprints


class _RowCorrelation:
    """Accumulates, frame by frame, each seed's Pearson correlation with the level of its own row outside
    its footprint window (the row's mean there): a seed on a stripe of line noise follows its row."""

    def __init__(self, seeds: np.ndarray, width: int, radius: int) -> None:
        self.y = np.ascontiguousarray(seeds[:, 0], np.int64)
        self.x = np.ascontiguousarray(seeds[:, 1], np.int64)
        self.lo = np.clip(self.x - radius, 0, width)
        self.hi = np.clip(self.x + radius + 1, 0, width)
        self.count = np.maximum(width - (self.hi - self.lo), 1)
        self.sums = np.zeros((5, len(seeds)))  # x, y, xx, yy, xy

    def add(self, frames: np.ndarray) -> None:
        """Add a block of frames, float32 (frames, height, width)."""
        frames = np.ascontiguousarray(frames, np.float32)
        totals = frames.sum(axis=2, dtype=np.float64)  # (frames, height): each row's sum
        _row_sums(frames, totals, self.y, self.x, self.lo, self.hi, self.count.astype(np.float64), self.sums)

    def correlation(self, n: int) -> np.ndarray:
        sx, sy, sxx, syy, sxy = self.sums / max(n, 1)
        cov, vx, vy = sxy - sx * sy, np.maximum(sxx - sx**2, 0), np.maximum(syy - sy**2, 0)
        den = np.sqrt(vx * vy)
        return np.where(den > 0, cov / np.where(den > 0, den, 1), 0).astype(np.float32)


@numba.njit(parallel=True, cache=True, nogil=True)
def _row_sums(frames, totals, y, x, lo, hi, count, sums):  # pragma: no cover - compiled
    """For each seed (split over the threads; each seed's sums in frame order): its own value v and
    its row's mean r outside its window, summed as v, r, v^2, r^2, v r into ``sums`` (5, seeds)."""
    n = frames.shape[0]
    for i in numba.prange(len(y)):
        yi = y[i]
        for t in range(n):
            inside = 0.0
            for c in range(lo[i], hi[i]):
                inside += frames[t, yi, c]
            r = (totals[t, yi] - inside) / count[i]
            v = np.float64(frames[t, yi, x[i]])
            sums[0, i] += v
            sums[1, i] += r
            sums[2, i] += v * v
            sums[3, i] += r * r
            sums[4, i] += v * r


def _seed_traces(movie, seeds: np.ndarray, mean: np.ndarray, p: InitParams, progress,
                 scratch: Scratch) -> tuple:
    """Seed traces (seeds, frames), the background trace f (frames,) and each seed's correlation with
    its row (:class:`_RowCorrelation`) in one pass.

    The traces are float16, the corrected movie's own precision (so nothing is lost), in ``scratch``:
    every candidate's trace is held until refinement, on disk when they do not fit its budget.
    """
    n, _, w = movie.shape
    traces = scratch.array((len(seeds), n), np.float16)
    f = np.empty(n, np.float32)
    norm = float((mean.astype(np.float64) ** 2).sum()) or 1.0
    rows = _RowCorrelation(seeds, w, p.footprint_radius)
    with ColumnWriter(traces) as out:
        for a, frames in frame_blocks(movie, p.block_frames, progress):
            out.write(a, frames[:, seeds[:, 0], seeds[:, 1]].T.astype(np.float16))
            f[a: a + len(frames)] = frame_dots(frames, mean) / norm
            rows.add(frames)
    return traces, f, rows.correlation(n)


def _footprints(movie, seeds: np.ndarray, traces: np.ndarray, p: InitParams, progress) -> tuple[Footprints, np.ndarray]:
    """Correlation / regression footprints of the seeds in their windows (third pass)."""
    n, h, w = movie.shape
    r = p.footprint_radius
    size = (min(2 * r + 1, h), min(2 * r + 1, w))
    offsets = np.stack([np.clip(seeds[:, 0] - r, 0, h - size[0]), np.clip(seeds[:, 1] - r, 0, w - size[1])], axis=1)
    k = len(seeds)
    sxy = np.zeros((k, *size))
    sx = np.zeros((k, *size))
    sxx = np.zeros((k, *size))
    for a, frames in frame_blocks(movie, p.block_frames, progress):
        window_moments(frames, traces[:, a: a + len(frames)], offsets, sxy, sx, sxx)
    ms, vs = _row_moments(traces)
    mx = sx / n
    cov = sxy / n - ms[:, None, None] * mx
    vx = np.maximum(sxx / n - mx**2, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(cov / np.sqrt(vx * vs[:, None, None]))
        beta = np.nan_to_num(cov / vs[:, None, None])
    patches = np.zeros((k, *size), np.float32)
    for i in range(k):
        mask = corr[i] >= p.corr_threshold
        labels, _ = ndimage.label(mask)
        sy, sx_ = seeds[i] - offsets[i]
        if labels[sy, sx_] == 0:
            continue
        patches[i] = np.where(labels == labels[sy, sx_], np.maximum(beta[i], 0), 0)
    return Footprints(patches, offsets, (h, w)), corr


def _row_moments(traces: np.ndarray, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """float64 (units,) mean and variance of each row, ``block`` rows at a time (``var`` of the whole
    array makes a float64 (units, frames) temporary: 200 MB at 700 units x 36,000 frames)."""
    ms, vs = np.zeros(len(traces)), np.zeros(len(traces))
    for r0 in range(0, len(traces), block):
        part = np.asarray(traces[r0: r0 + block], np.float64)
        ms[r0: r0 + block], vs[r0: r0 + block] = part.mean(axis=1), part.var(axis=1)
    return ms, vs


def _above_baseline(traces: np.ndarray, block: int = 64) -> np.ndarray:
    """float32 (units, frames): each trace minus its 10th percentile, clipped at 0 (the initial C), in
    place on float32 traces and ``block`` rows at a time (whole-array temporaries grow with frames)."""
    out = traces if traces.dtype == np.float32 and traces.flags.writeable else np.empty(traces.shape, np.float32)
    for r0 in range(0, len(traces), block):
        part = traces[r0: r0 + block]
        out[r0: r0 + block] = np.maximum(part - np.percentile(part, 10, axis=1, keepdims=True), 0)
    return out


def valid_region(shape: tuple[int, int], shifts: np.ndarray, max_padded: float = 0.1,
                 fov: Optional[np.ndarray] = None) -> np.ndarray:
    """bool (height, width): pixels that motion correction filled from outside the frame in at most a
    fraction ``max_padded`` of the frames.

    A pixel padded in most frames has a median of 0 and a peak wherever the tissue was in view: a
    false seed with a high peak-to-noise ratio. A pixel padded in a few frames only dips, and keeps
    its cell.

    Parameters
    ----------
    shape : (int, int)
        Frame size, pixels.
    shifts : numpy.ndarray
        float (frames, 2): the (dy, dx) shifts corrected (frames move by -shift).
    max_padded : float
        Largest fraction of padded frames for a valid pixel.
    fov : numpy.ndarray, optional
        bool (height, width): the field of view of the corrected movie (``MotionResult.fov``: pixels that
        showed the inside of the lens in every frame); the valid region is within it.
    """
    h, w = shape
    valid = np.zeros((h, w), bool)
    if len(shifts) == 0:
        valid[:] = True
    else:
        q = 1.0 - max_padded
        dy, dx = np.asarray(shifts, np.float64).T

        def margin(values: np.ndarray) -> int:
            return int(np.ceil(max(0.0, float(np.quantile(values, q)))))

        top, bottom, left, right = margin(-dy), margin(dy), margin(-dx), margin(dx)
        valid[top: h - bottom, left: w - right] = True
    return valid if fov is None else valid & np.asarray(fov, bool)


@executor.with_workers
def initialize(movie, fps: float, params: Optional[InitParams] = None,
               progress: Optional[Callable[[int], None]] = None, valid: Optional[np.ndarray] = None) -> InitResult:
    """Seeds, initial footprints A, traces C and background (b, f) of a motion-corrected movie.

    Parameters
    ----------
    movie : array-like
        (frames, height, width), float: the corrected, background-removed movie (a Zarr array from
        MotionCorrection, or any array).
    fps : float
        Frame rate, Hz (for ``cutoff_hz``).
    params : InitParams, optional
        Defaults follow Minian's published pipeline.
    progress : callable, optional
        Called with frames read, three passes over the movie (total ``3 x frames``).
    valid : numpy.ndarray, optional
        bool (height, width): where seeds may lie; motion correction's border (see
        :func:`valid_region`) holds edges that look like activity.
    workers : int, optional
        Threads (:func:`scopeline.executor.kernel_threads`; default :func:`scopeline.executor.settings`):
        the movie's next blocks are read while one is computed. The result does not depend on it.

    Returns
    -------
    InitResult
        With no seed found (a movie without cells), an empty result and a ``RuntimeWarning``.

    Raises
    ------
    ValueError
        If the movie has fewer than 2 frames or fps is not positive.
    """
    import time

    p = params or InitParams()
    n, h, w = movie.shape
    if n < 2:
        raise ValueError(f"the movie has {n} frame(s): initialization needs at least 2")
    if not fps or fps <= 0:
        raise ValueError(f"the frame rate must be positive, not {fps}")
    seconds = {}
    t0 = time.perf_counter()
    if p.border_pixels:
        inner = np.zeros((h, w), bool)
        inner[p.border_pixels: h - p.border_pixels, p.border_pixels: w - p.border_pixels] = True
        valid = inner if valid is None else valid & inner
    seeds, mean, noise = find_seeds(movie, p, progress, valid)
    seconds["seeds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with Scratch() as scratch:
        candidates, f, row_corr = _seed_traces(movie, seeds, mean, p, progress, scratch)
        removed = np.array([""] * len(seeds), dtype=object)
        pnr = seed_pnr(candidates, fps, p.cutoff_hz, p.drift_hz)
        removed[(pnr < p.pnr_threshold * pnr_scale(n, fps, p.cutoff_hz))] = "pnr"
        ks_p = seed_ks(candidates) if p.ks_alpha is not None else np.zeros(len(seeds), np.float32)
        if p.ks_alpha is not None:
            removed[(removed == "") & (ks_p >= p.ks_alpha)] = "ks"
        if p.max_row_corr < 1:
            removed[(removed == "") & (row_corr > p.max_row_corr)] = "stripe"
        if p.gmm:
            alive = np.flatnonzero(removed == "")
            high = _gmm_high(pnr[alive])
            removed[alive[~high]] = "gmm"
        alive = np.flatnonzero(removed == "")
        traces = take_rows(candidates, alive)  # survivors only: (units, frames), the size of C
        del candidates
        merged = merge_seeds(seeds[alive], traces, fps, p, scratch)
    removed[alive[merged]] = "merge"
    keep = np.setdiff1d(np.arange(len(alive)), merged)
    alive, traces = alive[keep], select_rows(traces, keep)
    seconds["refine"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if len(alive):
        A, _ = _footprints(movie, seeds[alive], traces, p, progress)
        empty = A.area() == 0
        removed[alive[empty]] = "footprint"
        A = A.subset(~empty)
        alive, traces = alive[~empty], select_rows(traces, ~empty)
        odd = not_cell_shaped(A, p.shape, p.diameter)
        removed[alive[odd]] = "shape"
        A = A.subset(~odd)
        alive, traces = alive[~odd], select_rows(traces, ~odd)
    else:
        A = Footprints.empty((h, w), 2 * p.footprint_radius + 1)
        if progress is not None:
            progress(n)
    C = _above_baseline(traces) if len(traces) else np.zeros((0, n), np.float32)
    seconds["footprints"] = time.perf_counter() - t0
    if len(alive) == 0:
        warnings.warn("initialization found no cell: no seed passed the refinement", RuntimeWarning, stacklevel=2)
    return InitResult(seeds=seeds, removed_by=list(removed), pnr=pnr, ks_p=ks_p, A=A, C=C,
                      b=mean, f=f, noise=noise, seconds=seconds)
