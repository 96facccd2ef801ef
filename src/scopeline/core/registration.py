"""Cross-session registration: the same cells across sessions of one field of view.

The method follows CellReg (Sheintuch et al. 2017, Cell Reports 21:1102), written anew:

1. **Alignment** of every session to a reference session (the first by default): a rotation (searched
   over +-``max_rotation`` degrees, then refined) and a sub-pixel translation that maximise the
   normalized cross-correlation of the sessions' footprint projections (each footprint scaled to
   peak 1 and summed, lightly smoothed). The peak correlation is the session's alignment quality.
2. **Candidate pairs**: units of two sessions whose aligned centroids lie within ``max_distance``
   pixels (a k-d tree: cost grows with units, not with their pairs).
3. **A probabilistic model of "same cell"** fitted to the candidate pairs: a two-component mixture
   over the centroid distance d and the footprint correlation r (cosine similarity of the aligned
   footprints). Same cells: d is lognormal (a heavier tail than a Gaussian position error: an
   overlapping neighbour pulls a centroid by pixels), r Beta; different cells: d grows linearly
   (neighbours at random positions), r Beta. Fitted by expectation-maximisation; each pair's P_same
   is its posterior, and the model's own error rates are the expected false positives among pairs at
   or above ``p_same`` and the expected false negatives below it.
   **Non-rigid step** (``nonrigid``, on by default): each session's confident pairs with the
   reference (P_same >= 0.9) give displacements that a Gaussian kernel (``nonrigid_scale`` px) turns
   into a smooth field on a grid (shrunk to zero where pairs are few); the sessions are moved by it
   and steps 2-3 run again. On simulated movies with a 1.5-px field (``benchmarks/registration.py``)
   the median same-cell distance falls from 1.44 to 0.55 px.
4. **Clustering** across all sessions: pairs at or above ``p_same`` join, most probable first, when
   the two groups have no session in common (one unit per session per cell: the conflict rule) and
   every cross pair of their members lies within ``max_distance``. A cell's score is the mean P_same
   over its members' pairs (a cell seen once: 1 - its largest P_same with any other unit). Cells
   found in only some sessions are kept.

Everything is in pixels of the reference session; :func:`read_footprints` reads other tools' files
(MATLAB / NumPy arrays of cells x height x width, as CellReg takes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from pydantic import Field

from scopeline.core.footprints import Footprints
from scopeline.core.params import StageParams
from scopeline.errors import ScopelineError

__all__ = ["RegistrationParams", "RegistrationError", "Alignment", "RegistrationResult", "read_footprints",
           "align", "register", "place", "rescale", "cell_width", "rotation_matrix", "model_densities", "match_scores", "PRESETS"]


class RegistrationError(ScopelineError, ValueError):
    """Sessions that cannot be registered (too few, no overlap, unreadable footprints)."""


class RegistrationParams(StageParams):
    """Cross-session registration parameters (pixels of the reference session, degrees)."""

    reference: int = Field(0, ge=0, description="Index of the reference session (the others are aligned to it).")
    max_rotation: float = Field(10.0, ge=0, le=45, description="Rotations searched, +- degrees.")
    rotation_step: float = Field(1.0, gt=0, le=10, description="Coarse rotation step, degrees (then refined to a "
                                 "twentieth of it).")
    max_shift: Optional[float] = Field(None, gt=0, description="Largest translation accepted, pixels (None: any "
                                       "within the frame).")
    smooth: float = Field(1.0, ge=0, le=10, description="Gaussian smoothing of the projections before correlation, px.")
    min_quality: float = Field(0.4, ge=0, le=1, description="Sessions whose aligned projections correlate less "
                               "than this with the reference's do not overlap it (or are at another scale): an "
                               "error. Measured: unrelated sessions 0.17, the real CellReg sessions 0.74-0.83.")
    max_distance: float = Field(8.0, gt=0, le=100, description="Candidate pairs: aligned centroids at most this far "
                                "apart, pixels (CellReg's 12 um at 1.5 um per pixel).")
    p_same: float = Field(0.5, gt=0, lt=1, description="A pair is the same cell at this posterior probability and up.")
    iterations: int = Field(100, ge=1, le=10000, description="Most EM iterations of the model.")
    nonrigid: bool = Field(True, description="After the rigid alignment, fit each session a smooth non-rigid field "
                           "(tissue and lens settling between days) to its confident same-cell pairs with the "
                           "reference, then pair and model again.")
    nonrigid_scale: float = Field(40.0, gt=0, description="Width of the non-rigid field's Gaussian kernel, pixels: "
                                  "displacements vary over about this distance.")
    max_size_ratio: float = Field(1.3, ge=1, description="Sessions whose median footprint width (at half maximum) "
                                  "differs from the reference's by more than this factor are at another pixel "
                                  "size: an error (rescale them first). Measured: the real CellReg sessions within "
                                  "1.05 of each other.")


#: shipped parameter sets
PRESETS = {"default": RegistrationParams()}


@dataclass
class Alignment:
    """One session's transform to the reference: a point p (y, x) of the session maps to
    ``R(rotation) (p - centre) + centre + (dy, dx)`` in the reference (centre: the reference frame's
    centre), and the alignment quality (peak normalized correlation of the projections, 0..1)."""

    dy: float
    dx: float
    rotation: float  # degrees; positive turns the session clockwise on screen (x right, y down)
    quality: float
    #: float32 (gy, gx, 2) or None: the non-rigid field, (dy, dx) pixels added after the rigid transform, on
    #: a grid of the reference frame with ``field_step`` pixels between nodes (node (0, 0) at pixel (0, 0))
    field: Optional[np.ndarray] = None
    field_step: float = 0.0

    def as_dict(self) -> dict:
        out = {"dy": round(self.dy, 3), "dx": round(self.dx, 3), "rotation": round(self.rotation, 3),
               "quality": round(self.quality, 4)}
        if self.field is not None:
            out["nonrigid_max"] = round(float(np.hypot(self.field[..., 0], self.field[..., 1]).max()), 3)
        return out

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """float64 (n, 2): the non-rigid field at reference points (n, 2) (zeros without one)."""
        points = np.asarray(points, np.float64).reshape(-1, 2)
        if self.field is None:
            return np.zeros_like(points)
        from scipy import ndimage

        grid = points.T / self.field_step
        return np.stack([ndimage.map_coordinates(self.field[..., k].astype(np.float64), grid, order=1, mode="nearest")
                         for k in range(2)], axis=1)


@dataclass
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes
    ----------
    alignment : list of Alignment
        Per session (the reference's is the identity).
    cells : numpy.ndarray
        int (n_cells, n_sessions): each cell's unit index in each session, -1 where not found.
    scores : numpy.ndarray
        float (n_cells,): per-cell score (see the module).
    pairs : numpy.ndarray
        Structured (n_pairs,): ``session_a``, ``unit_a``, ``session_b``, ``unit_b``, ``distance`` (px),
        ``correlation``, ``p_same`` of every candidate pair.
    model : dict
        The fitted mixture: ``weight_same``, ``median_distance_same`` (px), ``log_sd_same``, ``beta_same`` / ``beta_different``
        ((a, b) of r), ``max_distance``.
    error_rates : dict
        The model's expected ``false_positive`` (among pairs called same) and ``false_negative``
        (same-cell pairs called different) rates.
    centroids : list of numpy.ndarray
        Per session, float (units, 2) aligned centroids (reference pixels).
    aligned : list of tuple
        Per session, the footprints moved into the reference frame: float32 patches (units, sy, sx) and
        int (units, 2) their boxes' top-left corners (reference pixels, may be negative).
    shape : tuple
        The reference frame (height, width), pixels.
    """

    alignment: list
    cells: np.ndarray
    scores: np.ndarray
    pairs: np.ndarray
    model: dict
    error_rates: dict
    centroids: list = field(default_factory=list)
    aligned: list = field(default_factory=list)
    shape: tuple = (0, 0)

    def summary(self) -> dict:
        """``n_cells``, ``cells_in_n_sessions`` (cells found in exactly 1, 2, ... sessions), ``alignment``
        (per session), ``error_rates``, ``n_units`` per session, ``n_pairs``."""
        found = (self.cells >= 0).sum(axis=1)
        n = self.cells.shape[1]
        return {"n_cells": int(len(self.cells)), "cells_in_n_sessions": [int((found == k).sum()) for k in range(1, n + 1)],
                "alignment": [a.as_dict() for a in self.alignment],
                "n_units": [int((self.cells[:, s] >= 0).sum()) for s in range(n)], "n_pairs": int(len(self.pairs)),
                "error_rates": {k: round(float(v), 4) for k, v in self.error_rates.items()},
                "model": {k: (round(float(v), 4) if np.isscalar(v) else [round(float(x), 4) for x in v])
                          for k, v in self.model.items()}}


# ------------------------------------------------------------------------------ reading


def read_footprints(path: str | Path, key: Optional[str] = None) -> Footprints:
    """Footprints of one session from another tool's file: a MATLAB ``.mat`` (v5, or v7.3 through h5py;
    CellReg's ``allFiltersMat``), a NumPy ``.npy`` or ``.npz``; an array of cells x height x width
    (MATLAB v7.3 files store every dimension reversed; they are read back in MATLAB's order).

    Parameters
    ----------
    path : str or pathlib.Path
    key : str, optional
        The variable to read (default: the only 3-D array, or ``allFiltersMat``).

    Returns
    -------
    Footprints
        float32 patches, each scaled to peak 1.

    Raises
    ------
    RegistrationError
        If the file cannot be read, holds no (or several) 3-D arrays and no ``key`` is given, or the
        array is not cells x height x width with finite, non-negative values.
    """
    path = Path(path)
    if not path.is_file():
        raise RegistrationError(f"{path}: no such file")
    try:
        arrays = _arrays(path)
    except RegistrationError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is the file's problem
        raise RegistrationError(f"{path}: cannot read footprints ({type(err).__name__}: {err})") from None
    if key is not None:
        if key not in arrays:
            raise RegistrationError(f"{path}: no variable {key!r} (it has {', '.join(arrays) or 'none'})")
        A = arrays[key]
    else:
        cubes = {k: v for k, v in arrays.items() if np.ndim(v) == 3}
        if "allFiltersMat" in cubes:
            A = cubes["allFiltersMat"]
        elif len(cubes) == 1:
            A = next(iter(cubes.values()))
        else:
            raise RegistrationError(f"{path}: {len(cubes)} 3-D arrays ({', '.join(cubes) or 'none'}); name one "
                                    "(cells x height x width)")
    A = np.asarray(A)
    if A.ndim != 3 or not np.issubdtype(A.dtype, np.number) or min(A.shape) == 0:
        raise RegistrationError(f"{path}: footprints must be a non-empty numeric array cells x height x width, "
                                f"got {A.dtype} {A.shape}")
    A = A.astype(np.float32)
    if not np.isfinite(A).all() or (A < 0).any():
        raise RegistrationError(f"{path}: footprints must be finite and non-negative")
    peak = A.reshape(len(A), -1).max(axis=1)
    if (peak <= 0).any():
        raise RegistrationError(f"{path}: {(peak <= 0).sum()} footprint(s) are all zero")
    A /= peak[:, None, None]
    return Footprints.from_dense(A, pad=1)


def _arrays(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return {"footprints": np.load(path, allow_pickle=False)}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".mat":
        import h5py
        import scipy.io

        if h5py.is_hdf5(path):  # MATLAB v7.3
            with h5py.File(path, "r") as f:
                # MATLAB writes HDF5 in column-major order: every dimension reversed
                return {k: np.asarray(f[k]).T for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        return {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    raise RegistrationError(f"{path}: unknown footprint file type {suffix!r} (.mat, .npy, .npz)")


def rescale(A: Footprints, factor: float) -> Footprints:
    """Footprints resampled onto a grid ``factor`` times finer (``factor`` = the session's pixel size over
    the reference's: 2.0 turns 2-um pixels into 1-um ones), bilinear, each scaled back to peak 1.

    Parameters
    ----------
    A : Footprints
    factor : float
        Positive.

    Returns
    -------
    Footprints
        Frame ``round(shape * factor)``.

    Raises
    ------
    RegistrationError
        If ``factor`` is not positive and finite.
    """
    from scipy import ndimage

    if not (np.isfinite(factor) and factor > 0):
        raise RegistrationError(f"scale factor {factor}: must be positive")
    if factor == 1 or len(A) == 0:
        return A
    shape = (max(1, round(A.shape[0] * factor)), max(1, round(A.shape[1] * factor)))
    size = (int(np.ceil(A.patches.shape[1] * factor)) + 2, int(np.ceil(A.patches.shape[2] * factor)) + 2)
    offsets = np.clip(np.floor(A.offsets * factor).astype(int) - 1, 0, np.maximum(np.subtract(shape, size), 0))
    patches = np.zeros((len(A), *size), np.float32)
    for i, (patch, old, new) in enumerate(zip(A.patches, A.offsets, offsets)):
        # output pixel q (in the new patch) has its centre at (new + q + 0.5) / factor - 0.5 in the old frame
        origin = (new + 0.5) / factor - 0.5 - old
        patches[i] = ndimage.affine_transform(patch, np.full(2, 1 / factor), offset=origin, output_shape=size,
                                              order=1)
    peak = patches.reshape(len(A), -1).max(axis=1)
    patches /= np.where(peak > 0, peak, 1)[:, None, None]
    return Footprints(patches, offsets, shape)


def cell_width(A: Footprints) -> float:
    """Median footprint width of a session, pixels: the square root of the area at or above half the
    footprint's peak (0 for no unit)."""
    if len(A) == 0:
        return 0.0
    peak = A.patches.reshape(len(A), -1).max(axis=1)
    return float(np.sqrt(np.median((A.patches >= 0.5 * peak[:, None, None]).sum(axis=(1, 2)))))


# ------------------------------------------------------------------------------ alignment


def _projection(A: Footprints, shape: tuple, smooth: float) -> np.ndarray:
    """float64 ``shape``: the footprints (peak 1) summed, smoothed."""
    from scipy import ndimage

    out = np.zeros(shape, np.float64)
    sy, sx = A.patches.shape[1:]
    for p, (y, x) in zip(A.patches, A.offsets):
        ys, xs = slice(y, min(y + sy, shape[0])), slice(x, min(x + sx, shape[1]))
        out[ys, xs] += p[: ys.stop - ys.start, : xs.stop - xs.start] / max(float(p.max()), 1e-12)
    return ndimage.gaussian_filter(out, smooth) if smooth else out


def rotation_matrix(theta_deg: float) -> np.ndarray:
    """float64 (2, 2): the rotation by ``theta_deg`` degrees on (y, x) points (y down, x right), positive
    clockwise on screen; a point p turns about c to ``R @ (p - c) + c``."""
    t = np.deg2rad(theta_deg)
    # on (y, x) with y down: (0, 1) -> (sin t, cos t), a point right of the centre moves down: clockwise
    # on screen for t > 0
    return np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])


def _warp(image: np.ndarray, theta: float, shift, centre, shape) -> np.ndarray:
    """``image`` moved by the forward transform p -> R(p - centre) + centre + shift, sampled on ``shape``."""
    from scipy import ndimage

    R = rotation_matrix(theta)
    offset = np.asarray(centre) - R.T @ (np.asarray(centre) + np.asarray(shift, float))
    return ndimage.affine_transform(image, R.T, offset=offset, output_shape=shape, order=1)


def _xcorr(ref: np.ndarray, mov: np.ndarray, max_shift: Optional[float] = None) -> tuple[np.ndarray, float]:
    """The translation t (at most ``max_shift`` pixels long) that best maps ``mov`` onto ``ref``
    (ref(p) ~ mov(p - t), sub-pixel by a parabola through the peak) and the peak's normalized correlation."""
    F = np.fft.rfft2(ref - ref.mean()) * np.conj(np.fft.rfft2(mov - mov.mean()))
    corr = np.fft.irfft2(F, s=ref.shape)
    norm = np.sqrt(((ref - ref.mean()) ** 2).sum() * ((mov - mov.mean()) ** 2).sum()) or 1.0
    search = corr
    if max_shift is not None:
        ky = np.fft.fftfreq(corr.shape[0], 1 / corr.shape[0])[:, None]
        kx = np.fft.fftfreq(corr.shape[1], 1 / corr.shape[1])[None, :]
        search = np.where(np.hypot(ky, kx) <= max_shift, corr, -np.inf)
    iy, ix = np.unravel_index(np.argmax(search), corr.shape)
    sub = []
    for axis, i in ((0, iy), (1, ix)):
        n = corr.shape[axis]
        take = (lambda k: corr[k % n, ix]) if axis == 0 else (lambda k: corr[iy, k % n])
        a, b, c = take(i - 1), take(i), take(i + 1)
        den = a - 2 * b + c
        frac = 0.5 * (a - c) / den if den < 0 else 0.0
        v = i + frac
        sub.append(v - n if v > n / 2 else v)
    return np.array(sub), float(corr[iy, ix] / norm)


def align(reference: Footprints, moving: Footprints, p: Optional[RegistrationParams] = None) -> Alignment:
    """The rotation and translation mapping ``moving``'s frame onto ``reference``'s (see the module).

    Parameters
    ----------
    reference, moving : Footprints
        Two sessions' footprints (any frame sizes).
    p : RegistrationParams, optional

    Returns
    -------
    Alignment
        Quality 0 when nothing correlates (e.g. an empty session).
    """
    p = p or RegistrationParams()
    shape = (max(reference.shape[0], moving.shape[0]), max(reference.shape[1], moving.shape[1]))
    pad = (int(2 ** np.ceil(np.log2(shape[0] * 1.25))), int(2 ** np.ceil(np.log2(shape[1] * 1.25))))
    ref = np.zeros(pad)
    ref[: shape[0], : shape[1]] = _projection(reference, shape, p.smooth)
    mov_img = _projection(moving, shape, p.smooth)
    centre = (np.asarray(reference.shape, float) - 1) / 2

    def score(theta: float):
        rotated = _warp(mov_img, theta, (0.0, 0.0), centre, pad)
        t, q = _xcorr(ref, rotated, p.max_shift)
        return q, t

    coarse = np.arange(-p.max_rotation, p.max_rotation + 1e-9, p.rotation_step) if p.max_rotation else np.zeros(1)
    best = max(coarse, key=lambda th: score(th)[0])
    fine = np.arange(best - p.rotation_step, best + p.rotation_step + 1e-9, p.rotation_step / 20) if p.max_rotation \
        else np.zeros(1)
    results = [(th, *score(th)) for th in fine]
    theta, q, t = max(results, key=lambda r: r[1])
    # the translation was found for the image rotated about the centre: the forward transform is
    # p -> R (p - c) + c + t
    return Alignment(float(t[0]), float(t[1]), float(theta), max(0.0, float(q)))


def _transform_points(xy: np.ndarray, a: Alignment, centre) -> np.ndarray:
    R = rotation_matrix(a.rotation)
    rigid = (np.asarray(xy, float) - centre) @ R.T + centre + np.array([a.dy, a.dx])
    return rigid + a.displacement(rigid)


def _margin(A: Footprints, rotation: float) -> int:
    """Pixels a session's boxes grow by so that its footprints, turned by ``rotation`` degrees, stay inside."""
    size = max(A.patches.shape[1:])
    t = np.deg2rad(abs(rotation))
    return int(np.ceil(size / 2 * (abs(np.cos(t)) + abs(np.sin(t))) - (size - 1) / 2)) + 2


def _transform_footprints(A: Footprints, a: Alignment, centre, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Each footprint moved into the reference frame: patches (units, sy + 2m, sx + 2m) and their boxes'
    top-left corners (reference pixels; may be negative)."""
    from scipy import ndimage

    R = rotation_matrix(a.rotation)
    sy, sx = A.patches.shape[1:]
    out_shape = (sy + 2 * margin, sx + 2 * margin)
    half = (np.array(out_shape) - 1) / 2
    rigid = Alignment(a.dy, a.dx, a.rotation, a.quality)
    centres = _transform_points(A.offsets + (np.array([sy, sx]) - 1) / 2, rigid, centre)
    # the non-rigid field moves each footprint whole, by its value at the footprint's centroid
    extra = a.displacement(_transform_points(A.centroids(), rigid, centre)) if a.field is not None \
        else np.zeros((len(A), 2))
    boxes = np.round(centres + extra - half).astype(int)
    t = np.array([a.dy, a.dx])
    patches = np.zeros((len(A), *out_shape), np.float32)
    for i, (patch, P, B) in enumerate(zip(A.patches, A.offsets, boxes)):
        offset = R.T @ (B - t - extra[i] - centre) + centre - P
        patches[i] = ndimage.affine_transform(patch, R.T, offset=offset, output_shape=out_shape, order=1)
    return patches, boxes


# ------------------------------------------------------------------------------ pairs and model


def _pair_correlation(pa, ba, pb, bb) -> float:
    """Cosine similarity of two moved footprints (patches, of any sizes, with their boxes' corners)."""
    lo = np.maximum(ba, bb)
    hi = np.minimum(ba + pa.shape, bb + pb.shape)
    if (hi <= lo).any():
        return 0.0
    wa = pa[lo[0] - ba[0]: hi[0] - ba[0], lo[1] - ba[1]: hi[1] - ba[1]].astype(np.float64)
    wb = pb[lo[0] - bb[0]: hi[0] - bb[0], lo[1] - bb[1]: hi[1] - bb[1]]
    den = float(np.sqrt((pa.astype(np.float64) ** 2).sum() * (pb.astype(np.float64) ** 2).sum())) or 1.0
    return float((wa * wb).sum()) / den


def _beta_fit(r: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Beta (a, b) of values in (0, 1) with weights, by the method of moments."""
    r = np.clip(r, 1e-4, 1 - 1e-4)
    sw = max(float(w.sum()), 1e-12)
    m = float((w * r).sum() / sw)
    v = max(float((w * (r - m) ** 2).sum() / sw), 1e-6)
    common = max(m * (1 - m) / v - 1, 1e-3)
    return m * common, (1 - m) * common


def _beta_logpdf(r: np.ndarray, ab: tuple) -> np.ndarray:
    from scipy.special import betaln

    a, b = ab
    r = np.clip(r, 1e-4, 1 - 1e-4)
    return (a - 1) * np.log(r) + (b - 1) * np.log1p(-r) - betaln(a, b)


def _same_distance_logpdf(d: np.ndarray, median: float, log_sd: float, D: float) -> np.ndarray:
    """log density of a same-cell centroid distance: lognormal (median, sd of log d), truncated to [0, D]."""
    from scipy.special import ndtr

    ld = np.log(np.maximum(d, 1e-2))
    mu, s2 = np.log(max(median, 1e-3)), max(log_sd, 0.1) ** 2
    return -ld - 0.5 * np.log(2 * np.pi * s2) - (ld - mu) ** 2 / (2 * s2) \
        - np.log(max(float(ndtr((np.log(D) - mu) / np.sqrt(s2))), 1e-12))


def _fit_model(d: np.ndarray, r: np.ndarray, D: float, iterations: int) -> tuple[np.ndarray, dict]:
    """EM of the two-component model (see the module); returns P_same per pair and the parameters."""
    if len(d) == 0:
        return np.zeros(0), {"weight_same": 0.0, "median_distance_same": 0.0, "log_sd_same": 0.0,
                             "beta_same": (1.0, 1.0), "beta_different": (1.0, 1.0), "max_distance": D}
    w = ((r > 0.6) & (d < D / 3)).astype(float) * 0.9 + 0.05
    ld = np.log(np.maximum(d, 1e-2))
    params = {}
    for _ in range(iterations):
        pi = float(np.clip(w.mean(), 1e-3, 1 - 1e-3))
        sw = max(float(w.sum()), 1e-12)
        mu = float((w * ld).sum() / sw)
        log_sd = max(float(np.sqrt((w * (ld - mu) ** 2).sum() / sw)), 0.1)
        ab_s, ab_d = _beta_fit(r, w), _beta_fit(r, 1 - w)
        log_s = np.log(pi) + _same_distance_logpdf(d, np.exp(mu), log_sd, D) + _beta_logpdf(r, ab_s)
        log_d = np.log(1 - pi) + np.log(2 * np.maximum(d, 1e-3) / D**2) + _beta_logpdf(r, ab_d)
        new = 1 / (1 + np.exp(np.clip(log_d - log_s, -50, 50)))
        done = np.abs(new - w).max() < 1e-5
        w = new
        params = {"weight_same": pi, "median_distance_same": float(np.exp(mu)), "log_sd_same": log_sd,
                  "beta_same": ab_s, "beta_different": ab_d, "max_distance": D}
        if done:
            break
    return w, params


# ------------------------------------------------------------------------------ driver


def register(sessions: Sequence[Footprints], params: Optional[RegistrationParams] = None,
             progress=None) -> RegistrationResult:
    """Register units across sessions (see the module for the method).

    Parameters
    ----------
    sessions : sequence of Footprints
        Each session's footprints (frames may differ in size), in the order given.
    params : RegistrationParams, optional
    progress : callable, optional
        Called with a short text after each step.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    RegistrationError
        If fewer than two sessions are given, the reference index is out of range, a session has no
        unit, or a session's field of view does not overlap the reference's (alignment quality under
        ``min_quality``).
    """

    p = params or RegistrationParams()
    n = len(sessions)
    if n < 2:
        raise RegistrationError(f"{n} session(s): registration needs at least two")
    if p.reference >= n:
        raise RegistrationError(f"reference session {p.reference + 1} of {n} sessions")
    for s, A in enumerate(sessions):
        if len(A) == 0:
            raise RegistrationError(f"session {s + 1} has no unit")
    ref = sessions[p.reference]
    widths = [cell_width(A) for A in sessions]
    for s, wd in enumerate(widths):
        ratio = max(wd, widths[p.reference]) / max(min(wd, widths[p.reference]), 1e-9)
        if ratio > p.max_size_ratio:
            raise RegistrationError(f"session {s + 1}'s footprints are {wd:.1f} px wide, the reference session "
                                    f"{p.reference + 1}'s {widths[p.reference]:.1f} px ({ratio:.2f} times): footprints "
                                    "at another pixel size? Rescale them to the reference's first (scopeline "
                                    "register --pixel-size, or core.registration.rescale)")
    alignment = []
    for s, A in enumerate(sessions):
        a = Alignment(0.0, 0.0, 0.0, 1.0) if s == p.reference else align(ref, A, p)
        if a.quality < p.min_quality:
            raise RegistrationError(f"session {s + 1} does not overlap the reference session {p.reference + 1}: its "
                                    f"footprints correlate {a.quality:.2f} with the reference's after the best "
                                    f"rotation and shift (at least {p.min_quality} expected). Sessions of other "
                                    "fields of view, or footprints at another pixel size (rescale them to the "
                                    "reference's first), cannot be registered")
        alignment.append(a)
        if progress:
            progress(f"aligned session {s + 1}: {a.as_dict()}")
    moved, cents = place(sessions, alignment, p.reference)
    pairs, P, model = _pairs_and_model(moved, cents, p)
    if p.nonrigid:
        alignment = [a if s == p.reference else _with_field(a, s, pairs, P, cents, ref.shape, p)
                     for s, a in enumerate(alignment)]
        if progress:
            progress("non-rigid fields: " + ", ".join(str(a.as_dict().get("nonrigid_max", "none")) for a in alignment))
        moved, cents = place(sessions, alignment, p.reference)
        pairs, P, model = _pairs_and_model(moved, cents, p)
    model["p_same"] = p.p_same
    if progress:
        progress(f"{len(pairs)} candidate pairs, model {model}")
    called = P >= p.p_same
    errors = {"false_positive": float((1 - P[called]).sum() / max(called.sum(), 1)),
              "false_negative": float(P[~called].sum() / max(P.sum(), 1e-12))}
    cells, scores = _cluster(pairs, P, cents, [len(A) for A in sessions], p)
    out = np.zeros(len(pairs), dtype=pairs.dtype.descr + [("p_same", "f4")])
    for name in pairs.dtype.names:
        out[name] = pairs[name]
    out["p_same"] = P
    return RegistrationResult(alignment, cells, scores, out, model, errors, cents, moved, tuple(ref.shape))


def _pairs_and_model(moved: list, cents: list, p: RegistrationParams) -> tuple:
    """Candidate pairs between every two sessions (structured array), their P_same and the fitted model."""
    from scipy.spatial import cKDTree

    rows = []
    trees = [cKDTree(c) for c in cents]
    n = len(cents)
    for sa in range(n):
        for sb in range(sa + 1, n):
            for i, js in enumerate(trees[sa].query_ball_tree(trees[sb], p.max_distance)):
                for j in js:
                    d = float(np.hypot(*(cents[sa][i] - cents[sb][j])))
                    r = _pair_correlation(moved[sa][0][i], moved[sa][1][i], moved[sb][0][j], moved[sb][1][j])
                    rows.append((sa, i, sb, j, d, r))
    pairs = np.array(rows, dtype=[("session_a", "i4"), ("unit_a", "i4"), ("session_b", "i4"), ("unit_b", "i4"),
                                  ("distance", "f4"), ("correlation", "f4")])
    P, model = _fit_model(pairs["distance"].astype(float), pairs["correlation"].astype(float), p.max_distance,
                          p.iterations)
    return pairs, P, model


def _with_field(a: Alignment, s: int, pairs: np.ndarray, P: np.ndarray, cents: list, shape: tuple,
                p: RegistrationParams, confident: float = 0.9, least: int = 10) -> Alignment:
    """Session ``s``'s alignment with a smooth non-rigid field: the displacements from its units to their
    confident (P_same >= ``confident``) partners in the reference, averaged by a Gaussian kernel of width
    ``nonrigid_scale`` on a grid of half that step, shrunk towards zero where few pairs lie (one zero
    pseudo-pair of weight 1). Fewer than ``least`` confident pairs: no field."""
    ref = p.reference
    sel_a = (pairs["session_a"] == ref) & (pairs["session_b"] == s) & (P >= confident)
    sel_b = (pairs["session_a"] == s) & (pairs["session_b"] == ref) & (P >= confident)
    at = np.concatenate([cents[s][pairs["unit_b"][sel_a]], cents[s][pairs["unit_a"][sel_b]]])
    to = np.concatenate([cents[ref][pairs["unit_a"][sel_a]], cents[ref][pairs["unit_b"][sel_b]]])
    if len(at) < least:
        return a
    step = p.nonrigid_scale / 2
    gy, gx = (np.arange(int(np.ceil((n - 1) / step)) + 1) * step for n in shape)
    nodes = np.stack(np.meshgrid(gy, gx, indexing="ij"), axis=-1).reshape(-1, 2)
    d2 = ((nodes[:, None, :] - at[None, :, :]) ** 2).sum(axis=2)
    w = np.exp(-d2 / (2 * p.nonrigid_scale**2))
    field = (w @ (to - at)) / (w.sum(axis=1, keepdims=True) + 1.0)
    return Alignment(a.dy, a.dx, a.rotation, a.quality, field.reshape(len(gy), len(gx), 2).astype(np.float32), step)


def place(sessions: Sequence[Footprints], alignment: Sequence[Alignment], reference: int = 0) -> tuple[list, list]:
    """Every session's footprints and centroids moved into the reference frame by its alignment.

    Returns
    -------
    (list, list)
        Per session: (float32 patches (units, sy, sx), int (units, 2) their boxes' corners) and float (units,
        2) centroids, reference pixels (:attr:`RegistrationResult.aligned` and ``centroids``).
    """
    centre = (np.asarray(sessions[reference].shape, float) - 1) / 2
    moved = [_transform_footprints(A, a, centre, _margin(A, a.rotation)) for A, a in zip(sessions, alignment)]
    cents = [_transform_points(A.centroids(), a, centre) for A, a in zip(sessions, alignment)]
    return moved, cents


def _cluster(pairs, P: np.ndarray, cents: list, sizes: list, p: RegistrationParams) -> tuple[np.ndarray, np.ndarray]:
    """Cells from the pairs (see the module's clustering and conflict rule)."""
    offsets = np.cumsum([0, *sizes])
    total = int(offsets[-1])
    parent = np.arange(total)
    members = {u: [u] for u in range(total)}
    session_of = np.repeat(np.arange(len(sizes)), sizes)
    xy = np.concatenate(cents)

    def root(u):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    gid = lambda s, u: int(offsets[s] + u)  # noqa: E731
    order = np.lexsort((pairs["distance"], -pairs["correlation"], -P))  # most probable first; ties: most alike
    for k in order:
        if P[k] < p.p_same:
            break
        a, b = root(gid(pairs["session_a"][k], pairs["unit_a"][k])), root(gid(pairs["session_b"][k], pairs["unit_b"][k]))
        if a == b:
            continue
        ma, mb = members[a], members[b]
        if set(session_of[ma]) & set(session_of[mb]):
            continue  # one unit per session per cell: the more probable pair came first
        if max(np.hypot(*(xy[i] - xy[j])) for i in ma for j in mb) > p.max_distance:
            continue
        parent[b] = a
        members[a] = ma + mb
        del members[b]
    pair_p = {}
    for k in range(len(P)):
        key = (gid(pairs["session_a"][k], pairs["unit_a"][k]), gid(pairs["session_b"][k], pairs["unit_b"][k]))
        pair_p[key] = pair_p[key[::-1]] = float(P[k])
    best = np.zeros(total)
    for (i, _), v in pair_p.items():
        best[i] = max(best[i], v)
    groups = sorted(members.values(), key=lambda g: min(g))
    cells = np.full((len(groups), len(sizes)), -1, int)
    scores = np.zeros(len(groups))
    for c, g in enumerate(groups):
        for u in g:
            cells[c, session_of[u]] = u - offsets[session_of[u]]
        inside = [pair_p.get((i, j), 0.0) for i in g for j in g if i < j]
        scores[c] = float(np.mean(inside)) if inside else 1.0 - best[g[0]]
    return cells, scores


def model_densities(model: dict, d: np.ndarray, r: np.ndarray) -> dict:
    """The fitted model's weighted densities (for figures): ``same_d``, ``different_d`` at distances ``d``
    (pixels) and ``same_r``, ``different_r`` at correlations ``r``."""
    pi, D = model["weight_same"], model["max_distance"]
    d = np.asarray(d, float)
    same_d = pi * np.exp(_same_distance_logpdf(d, model["median_distance_same"], model["log_sd_same"], D))
    different_d = (1 - pi) * 2 * d / D**2
    return {"same_d": same_d, "different_d": different_d,
            "same_r": pi * np.exp(_beta_logpdf(np.asarray(r, float), model["beta_same"])),
            "different_r": (1 - pi) * np.exp(_beta_logpdf(np.asarray(r, float), model["beta_different"]))}


def match_scores(result: RegistrationResult, ids: Sequence[np.ndarray]) -> tuple[float, float]:
    """Pairwise precision and recall of a registration's cross-session matches against known identities.

    Parameters
    ----------
    result : RegistrationResult
    ids : sequence of numpy.ndarray
        Per session, the true cell id of each unit (e.g. :func:`scopeline.core.simulate.session_footprints`).

    Returns
    -------
    (float, float)
        Precision (matched pairs that are one cell) and recall (pairs of one cell that are matched), over
        every pair of sessions.
    """
    n = len(ids)
    true, found = set(), set()
    for a in range(n):
        for b in range(a + 1, n):
            ia, ib = {g: i for i, g in enumerate(ids[a])}, {g: i for i, g in enumerate(ids[b])}
            true |= {(a, ia[g], b, ib[g]) for g in set(ids[a]) & set(ids[b])}
            found |= {(a, int(c[a]), b, int(c[b])) for c in result.cells if c[a] >= 0 and c[b] >= 0}
    hit = len(true & found)
    return hit / max(len(found), 1), hit / max(len(true), 1)
